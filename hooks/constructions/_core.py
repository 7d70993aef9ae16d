"""Shared pieces of the constructions: the :class:`Construction` record, the readout head, encoding.

Every construction is a :class:`hooks.diagonal.HookedDiagonalSSM` with the one-hot token embedding and
φ = identity in every layer, so the residual stream is ``[onehot(x_t) | h^0_t | h^1_t | ...]``: each
layer writes its own state into its slice. All nonlinearity is position-wise and lives in the next
layer's input maps a(·), b(·) (e.g. "the previous token was w", "the depth is d") and in the readout.
The model's head is the construction's :func:`readout` applied to the states read back from the
stream, turned into logits ``+LOGIT`` (allowed) / ``-LOGIT`` (not), so ``sigmoid(logits) > 0.5`` decodes
exactly the readout's sets and an edit on ``hook_ssm_state`` reaches the logits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from hooks.diagonal import DiagonalLayer, DiagonalSSMConfig, HookedDiagonalSSM
from languages.vocab import END, END_ID, Vocab

LOGIT = 10.0

Readout = Callable[[Sequence[Tensor]], Tensor]


@dataclass
class Construction:
    """A hand-built SSM for one language.

    ``model``: the runnable, hooked model with logits over ``Vocab(language.alphabet)``: a
    :class:`HookedDiagonalSSM` (the theory's diagonal-SSM constructions) or, for :mod:`hooks.constructions.as_mamba`,
    a :class:`hooks.mamba.HookedMamba` with hand-set weights.
    ``readout(states)``: per-layer states ``[B, L, S_l]`` (what ``blocks.{l}.hook_ssm_state`` shows) to
    the allowed-next sets ``[B, L, V]`` (bool; PAD and BOS columns False). For the diagonal models the
    logits are ``where(readout(states), +LOGIT, -LOGIT)``. None for the Mamba realizations, whose
    logits also read the conv window and the token.
    ``decoders``: named automaton variables read off the states (e.g. ``depth``, ``top``, ``stored``),
    each ``states -> [B, L]`` tensor, for tests and as probe targets in the construction's own basis.
    """

    name: str
    language: Any
    model: Any
    readout: Optional[Readout]
    decoders: dict[str, Callable[[Sequence[Tensor]], Tensor]] = field(default_factory=dict)
    description: str = ""

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.language.alphabet)

    @property
    def state_hooks(self) -> list[str]:
        return [n for n in self.model.hook_dict if n.endswith("hook_ssm_state")]

    @property
    def state_sizes(self) -> tuple[int, ...]:
        cfg = self.model.cfg
        if hasattr(cfg, "d_inner"):  # HookedMamba: E x N per layer
            return (cfg.d_inner * cfg.d_state,) * cfg.n_layers
        return tuple(cfg.d_state)

    @property
    def dtype(self) -> str:
        dt = getattr(self.model.cfg, "dtype", None)
        if dt is None:
            dt = next(self.model.parameters()).dtype
        return str(dt).replace("torch.", "")

    def tokens(self, strings: Sequence[str]) -> Tensor:
        """``[BOS] + encode(s)`` per string, right-padded with PAD: ``[B, max len + 1]`` int64."""
        return encode(self.vocab, strings)

    @torch.no_grad()
    def states(self, tokens: Tensor) -> list[Tensor]:
        """Every layer's ``hook_ssm_state`` on ``tokens``."""
        names = self.state_hooks
        _, cache = self.model.run_with_cache(tokens, names_filter=lambda n: n in names)
        return [cache[n] for n in names]

    def __repr__(self) -> str:
        return f"Construction({self.name!r}, state sizes {self.state_sizes}, dtype {self.dtype})"


def encode(vocab: Any, strings: Sequence[str]) -> Tensor:
    """:meth:`languages.vocab.Vocab.inputs` as a tensor: ``[B, max len + 1]`` int64."""
    return torch.from_numpy(Vocab(vocab).inputs(strings))


def batch_for(language: Any, vocab: Any, strings: Sequence[str]) -> SimpleNamespace:
    """A minimal batch (``tokens``, ``mask``, ``allowed``, ``strings``) straight from the contract's
    ``Language.allowed_next`` and ``Vocab.encode``: the reference the metrics compare against."""
    tokens = encode(vocab, strings)
    B, L = tokens.shape
    allowed = np.zeros((B, L, vocab.size), dtype=bool)
    mask = np.zeros((B, L), dtype=bool)
    col = {sym: vocab.encode(sym)[0] for sym in language.alphabet}
    col[END] = END_ID
    for i, s in enumerate(strings):
        mask[i, : len(s) + 1] = True
        for t, sets in enumerate(language.allowed_next(s)):
            for sym in sets:
                allowed[i, t, col[sym]] = True
    return SimpleNamespace(tokens=tokens, mask=torch.from_numpy(mask), allowed=torch.from_numpy(allowed),
                           strings=list(strings))


class ReadoutHead(torch.nn.Module):
    """Final stream ``[B, L, D]`` -> logits: the readout on the states held in the stream's slices."""

    def __init__(self, cfg: DiagonalSSMConfig, readout: Readout):
        super().__init__()
        self.cfg = cfg
        self.readout = readout

    def forward(self, resid: Tensor) -> Tensor:
        states = self.cfg.split(resid)[1:]
        allowed = self.readout(states)
        return torch.where(allowed, LOGIT, -LOGIT).to(resid.dtype)


def make_config(language: Any, name: str, sizes: Sequence[int], dtype: str) -> DiagonalSSMConfig:
    """Config of a construction: one-hot embedding over ``Vocab(language.alphabet)``, φ = identity."""
    return DiagonalSSMConfig(
        d_vocab=Vocab(language.alphabet).size,
        d_state=list(sizes),
        dtype=dtype,
        alphabet=tuple(language.alphabet),
        name=name,
    )


def assemble(cfg: DiagonalSSMConfig, maps: Sequence[tuple[Callable, Callable]], readout: Readout) -> HookedDiagonalSSM:
    """The model from per-layer ``(a(u), b(u))`` maps of the stream ``u`` ``[B, L, D]``."""
    blocks = [DiagonalLayer(s, gate=a, inp=b) for s, (a, b) in zip(cfg.d_state, maps)]
    return HookedDiagonalSSM(cfg, blocks, head=ReadoutHead(cfg, readout))


def column(vocab: Any, symbols: Sequence[str]) -> list[int]:
    return [vocab.encode(c)[0] for c in symbols]


def indicator(V: int, ids: Sequence[int], values: Optional[Sequence[float]] = None) -> Tensor:
    """A ``[V]`` vector: ``values`` (default 1) at ``ids``; ``x @ indicator`` reads it per position."""
    v = torch.zeros(V, dtype=torch.float64)
    for k, i in enumerate(ids):
        v[i] = 1.0 if values is None else float(values[k])
    return v


def empty_allowed(state: Tensor, V: int) -> Tensor:
    return torch.zeros(*state.shape[:2], V, dtype=torch.bool, device=state.device)
