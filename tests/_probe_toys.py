"""Toy model and language for the probe tests (independent of languages/ and hooks/).

CountingModel: a HookedRootModule whose hooks are exact functions of the prefix, so alignment can be
checked by recomputation from the strings:
  blocks.0.hook_counts  [B, L, V]     counts of each token id in tokens[:, :i+1]
  blocks.0.hook_token   [B, L, V]     one-hot of tokens[:, i]
  blocks.1.hook_pair    [B, L, 2, V]  stack(counts, 2 * counts + i)   (extra dims -> flattened)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

ALPHABET = ("a", "b", "c")


class ToyVocab:
    PAD, BOS, END = 0, 1, 2

    def __init__(self, alphabet=ALPHABET):
        self.alphabet = tuple(alphabet)
        self.size = len(self.alphabet) + 3

    def encode(self, s):
        return [3 + self.alphabet.index(c) for c in s]


class ToyLanguage:
    """Random strings over {a, b, c}; trace variables at position i (after reading s[:i]):
    n_a (int), last (s[i-1] or None), pair ((n_a, n_b)), state (n_a % 3, categorical by name),
    parity_b (bool)."""

    alphabet = ALPHABET
    name = "toy"

    def sample(self, n, min_len, max_len, seed=0):
        rng = np.random.default_rng(seed)
        return ["".join(rng.choice(list(self.alphabet), size=int(rng.integers(min_len, max_len + 1))))
                for _ in range(n)]

    def trace(self, s, initial=False):
        out = {"n_a": [], "last": [], "pair": [], "state": [], "parity_b": []}
        rng = range(len(s) + 1) if initial else range(1, len(s) + 1)
        for i in rng:
            p = s[:i]
            out["n_a"].append(p.count("a"))
            out["last"].append(p[-1] if p else None)
            out["pair"].append((p.count("a"), p.count("b")))
            out["state"].append(p.count("a") % 3)
            out["parity_b"].append(p.count("b") % 2 == 1)
        return out


@dataclass
class ToyConfig:
    vocab_size: int = 6
    seed: int = 0


class _Block(nn.Module):
    def __init__(self, names):
        super().__init__()
        for n in names:
            setattr(self, n, HookPoint())


class CountingModel(HookedRootModule):
    def __init__(self, cfg: ToyConfig = ToyConfig()):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = cfg.vocab_size
        self.weight = nn.Parameter(torch.randn(cfg.vocab_size, cfg.vocab_size))
        self.blocks = nn.ModuleList([_Block(["hook_counts", "hook_token"]), _Block(["hook_pair"])])
        self.forward_calls = 0
        self.setup()

    def forward(self, tokens):
        self.forward_calls += 1
        onehot = F.one_hot(tokens, self.vocab_size).float()
        counts = self.blocks[0].hook_counts(onehot.cumsum(dim=1))
        self.blocks[0].hook_token(onehot)
        idx = torch.arange(tokens.shape[1], dtype=torch.float32)[None, :, None]
        self.blocks[1].hook_pair(torch.stack([counts, 2 * counts + idx], dim=2))
        return counts @ self.weight


def expected_counts(s: str, pos: int, vocab: ToyVocab) -> np.ndarray:
    """Counts of each token id in [BOS] + encode(s[:pos]) -- recomputed independently."""
    out = np.zeros(vocab.size)
    out[vocab.BOS] = 1
    for c in s[:pos]:
        out[3 + vocab.alphabet.index(c)] += 1
    return out
