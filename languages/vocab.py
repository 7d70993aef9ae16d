"""The vocabulary: the end marker, the token ids, and the one encoder of strings into model inputs.

The lowest module of :mod:`languages` (numpy only, no first-party imports): :mod:`languages.base`,
:mod:`languages.datasets`, the models' metrics and the constructions all take their ids from here.

Token ids (``docs/interfaces.md``):

===================  =====  ===============================================================
name                 value  meaning
===================  =====  ===============================================================
``PAD_ID``           0      right-padding of a batch; never predicted
``BOS_ID``           1      the first input token of every string; never predicted
``END_ID``           2      end of string (the target :data:`END` in allowed-next sets)
``FIRST_SYMBOL_ID``  3      token id of ``alphabet[0]``; symbol ``j`` has id ``j + 3``
``FIRST_OUTPUT_ID``  2      the first *predicted* column: a model's outputs over END and the
                            alphabet (``hooks.metrics.output_probs``) have column ``k`` = token
                            id ``k + FIRST_OUTPUT_ID`` (= END_ID: PAD and BOS are not outputs)
===================  =====  ===============================================================

A model input is ``[BOS] + encode(s)``, right-padded with PAD in a batch (:func:`model_inputs`, the one
place that layout is built); model position ``i`` has read ``s[:i]``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

END = "$"
"""End-of-string marker in :meth:`Language.allowed_next` sets. No alphabet contains it."""

PAD_ID, BOS_ID, END_ID = 0, 1, 2
FIRST_SYMBOL_ID = 3
FIRST_OUTPUT_ID = END_ID
SPECIAL_TOKENS = ("<pad>", "<bos>", END)

__all__ = ["END", "PAD_ID", "BOS_ID", "END_ID", "FIRST_SYMBOL_ID", "FIRST_OUTPUT_ID", "SPECIAL_TOKENS",
           "Vocab", "SymbolIndex", "check_alphabet", "model_inputs"]


def check_alphabet(alphabet: Iterable[str]) -> tuple[str, ...]:
    """``alphabet`` as a tuple of distinct one-character symbols other than :data:`END`, or ValueError."""
    alphabet = tuple(alphabet)
    if not alphabet:
        raise ValueError("an alphabet needs at least one symbol")
    for c in alphabet:
        if not isinstance(c, str) or len(c) != 1:
            raise ValueError(f"alphabet symbols must be one-character strings, got {c!r}")
        if c == END:
            raise ValueError(f"{END!r} is reserved for the end-of-string marker and cannot be a symbol")
    if len(set(alphabet)) != len(alphabet):
        raise ValueError(f"alphabet has repeated symbols: {alphabet!r}")
    return alphabet


class SymbolIndex:
    """Strings to int64 indices into an alphabet (an ASCII lookup table where the alphabet allows it).

    ``bad(s, pos)`` builds the error raised for a foreign symbol (each caller names its own alphabet).
    """

    def __init__(self, alphabet: Sequence[str], bad: Callable[[str, int], Exception]):
        self.index = {c: i for i, c in enumerate(alphabet)}
        self.bad = bad
        self.ascii: Optional[np.ndarray] = None
        if all(ord(c) < 128 for c in alphabet):
            table = np.full(128, -1, dtype=np.int64)
            for i, c in enumerate(alphabet):
                table[ord(c)] = i
            self.ascii = table

    def __call__(self, s: str) -> np.ndarray:
        if not isinstance(s, str):
            raise TypeError(f"expected a str, got {type(s).__name__}")
        if self.ascii is not None and s.isascii():
            ids = self.ascii[np.frombuffer(s.encode("ascii"), dtype=np.uint8)]
            if ids.size and ids.min() < 0:
                raise self.bad(s, int(np.argmax(ids < 0)))
            return ids
        out = np.empty(len(s), dtype=np.int64)
        for i, c in enumerate(s):
            j = self.index.get(c)
            if j is None:
                raise self.bad(s, i)
            out[i] = j
        return out


def model_inputs(rows: Sequence[Sequence[int]], *, width: Optional[int] = None, pad: int = PAD_ID,
                 bos: int = BOS_ID) -> np.ndarray:
    """Per-string token ids (no BOS) to the model input ``[B, width]`` int64: BOS, the ids, PAD.

    ``width`` defaults to the longest row + 1; a row longer than ``width - 1`` raises ValueError.
    ``pad``/``bos``: the ids of a vocabulary other than :class:`Vocab`'s (e.g. a model's own)."""
    longest = max((len(r) for r in rows), default=0)
    T = longest + 1 if width is None else width
    if longest > T - 1:
        raise ValueError(f"model_inputs: a row of {longest} ids does not fit width {T} (BOS + ids)")
    out = np.full((len(rows), T), pad, dtype=np.int64)
    out[:, 0] = bos
    for b, r in enumerate(rows):
        out[b, 1 : len(r) + 1] = r
    return out


class Vocab:
    """Token ids for one alphabet: PAD=0, BOS=1, END=2, symbols from 3 in alphabet order.

    ``alphabet``: the symbols, or anything with an ``alphabet`` attribute (a ``Language``).
    """

    PAD = PAD_ID
    BOS = BOS_ID
    END = END_ID
    FIRST_SYMBOL = FIRST_SYMBOL_ID

    def __init__(self, alphabet: Union[Iterable[str], Any]):
        alphabet = getattr(alphabet, "alphabet", alphabet)
        self.alphabet = check_alphabet(alphabet)
        self.itos: tuple[str, ...] = SPECIAL_TOKENS + self.alphabet
        self.stoi = {c: i + FIRST_SYMBOL_ID for i, c in enumerate(self.alphabet)}
        self._index = SymbolIndex(self.alphabet, self._bad)

    @property
    def size(self) -> int:
        """Number of token ids: ``len(alphabet) + 3``."""
        return len(self.alphabet) + FIRST_SYMBOL_ID

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and other.alphabet == self.alphabet

    def __hash__(self) -> int:
        return hash(self.alphabet)

    def __repr__(self) -> str:
        return f"Vocab(PAD=0, BOS=1, END=2, symbols {''.join(self.alphabet)!r} from 3; size {self.size})"

    def _bad(self, s: str, pos: int) -> ValueError:
        return ValueError(f"symbol {s[pos]!r} at position {pos} is not in the vocabulary's alphabet "
                          f"{''.join(self.alphabet)!r}")

    def encode_array(self, s: str) -> np.ndarray:
        """``s`` as an int64 array of token ids (no BOS)."""
        return self._index(s) + FIRST_SYMBOL_ID

    def encode(self, s: str) -> list[int]:
        """``s`` as a list of token ids (no BOS); ValueError naming a foreign symbol and its position."""
        return self.encode_array(s).tolist()

    def inputs(self, strings: Sequence[str]) -> np.ndarray:
        """The model input of ``strings``: ``[BOS] + encode(s)`` per row, right-padded with PAD,
        ``[B, max len + 1]`` int64 (:func:`model_inputs`)."""
        return model_inputs([self.encode_array(s) for s in strings])

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Token ids back to a string. PAD, BOS and END are dropped (``skip_special=True``) or rejected;
        an id outside ``[0, size)`` raises ValueError naming it and its position."""
        out = []
        for pos, i in enumerate(ids):
            if isinstance(i, np.integer):
                i = int(i)
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.size:
                raise ValueError(f"token id {i!r} at position {pos} is not in [0, {self.size})")
            if i < FIRST_SYMBOL_ID:
                if skip_special:
                    continue
                raise ValueError(f"special token {SPECIAL_TOKENS[i]!r} (id {i}) at position {pos}")
            out.append(self.itos[i])
        return "".join(out)
