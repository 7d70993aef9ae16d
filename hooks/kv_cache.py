"""The key/value cache of a :class:`~hooks.transformer.HookedTransformerLM`: a Transformer's state
after a prefix, and running a suffix from it (for interchange interventions).

Glossary (shapes): B batch, P cached prefix length, S suffix length, H n_heads, Dh d_head,
V vocab_size.

* :class:`LayerKV`: one layer's keys ``k`` and values ``v`` of the ``P`` prefix positions,
  ``[B, P, H, Dh]`` each.
* :class:`KVCache`: one :class:`LayerKV` per layer (``cache.layers[l]``); all have the same ``P``.
* :func:`capture_kv`: run a prefix ``[B, P]``; its logits ``[B, P, V]`` and its cache.
* :func:`run_with_kv`: run a suffix ``[B, S]`` after a cache; logits ``[B, S, V]`` (and, if asked,
  the cache of all ``P + S`` positions). ``HookedTransformerLM.forward(tokens, state=...,
  return_state=...)`` is this function.

How a cached run works
----------------------
``NativeModel`` has no KV cache (``past_key_values`` is ignored), so :func:`run_with_kv` continues
from a :class:`KVCache` through hooks: it runs ``P`` filler tokens followed by the suffix and
replaces the keys and values of the first ``P`` positions in every layer (``blocks.{l}.attn.hook_k``
/ ``hook_v``) by the cache. A position's output depends on other positions only through their
keys and values, so the suffix logits are exactly those of a cached continuation (positions are
``P..P+S-1``, as in the full run). Hooks you add yourself see ``P + S`` positions during such a
run; the first ``P`` rows of non-K/V activations are filler and meaningless.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from hooks.transformer import HookedTransformerLM, TransformerConfig


@dataclass
class LayerKV:
    """One layer's keys and values for the first ``P`` positions, ``[B, P, H, Dh]`` each."""

    k: Float[Tensor, "B P H Dh"]
    v: Float[Tensor, "B P H Dh"]


@dataclass
class KVCache:
    """A Transformer's state after a prefix: per layer, the keys and values of every prefix position.

    ``cache.layers[l]`` can be replaced by another cache's layer of the same shape (equal prefix
    length) to swap one layer's state between runs.
    """

    layers: list[LayerKV] = field(default_factory=list)

    @property
    def length(self) -> int:
        return int(self.layers[0].k.shape[1]) if self.layers else 0

    @property
    def batch_size(self) -> int:
        return int(self.layers[0].k.shape[0]) if self.layers else 0

    def detach(self) -> "KVCache":
        return KVCache([LayerKV(x.k.detach(), x.v.detach()) for x in self.layers])

    def replace_layers(self, other: "KVCache", layers: Sequence[int]) -> "KVCache":
        """A new cache: this one with ``layers`` taken from ``other``."""
        out = list(self.layers)
        for l in layers:
            if tuple(other.layers[l].k.shape) != tuple(self.layers[l].k.shape):
                raise ValueError(
                    f"cannot swap layer {l}: shapes {tuple(other.layers[l].k.shape)} and "
                    f"{tuple(self.layers[l].k.shape)} differ (prefix lengths and batch sizes must match)"
                )
            out[l] = other.layers[l]
        return KVCache(out)

    def check(self, cfg: TransformerConfig, batch_size: int) -> None:
        if len(self.layers) != cfg.n_layers:
            raise ValueError(f"KV cache has {len(self.layers)} layers, the model has {cfg.n_layers}")
        want = (batch_size, self.length, cfg.n_heads, cfg.d_head)
        for l, x in enumerate(self.layers):
            for name, t in (("k", x.k), ("v", x.v)):
                if tuple(t.shape) != want:
                    raise ValueError(
                        f"KV cache layer {l} {name} has shape {tuple(t.shape)}, expected {want} "
                        f"(B, P, n_heads, d_head; every layer must have the same prefix length)"
                    )


def capture_kv(
    model: HookedTransformerLM, tokens: Int[Tensor, "B P"]
) -> tuple[Float[Tensor, "B P V"], KVCache]:
    """Run a prefix; return its logits and its :class:`KVCache`."""
    return run_with_kv(model, tokens, None, return_kv=True)


def run_with_kv(
    model: HookedTransformerLM,
    tokens: Int[Tensor, "B S"],
    past_kv: Optional[KVCache] = None,
    *,
    return_kv: bool = False,
):
    """Run ``tokens`` as the continuation of the prefix whose keys/values are ``past_kv``.

    Returns logits ``[B, S, V]`` for the suffix positions, and, with ``return_kv=True``, the cache
    of all ``P + S`` positions too. ``run_with_kv(m, suffix, capture_kv(m, prefix)[1])`` equals
    ``m(cat(prefix, suffix))[:, P:]``; a cache whose layers come from another run of equal prefix
    length gives the interchange intervention on that prefix.
    """
    tokens = model.check_tokens(tokens)
    cfg = model.cfg
    batch, n_new = tokens.shape
    n_past = 0 if past_kv is None else past_kv.length
    if past_kv is not None:
        past_kv.check(cfg, batch)
    if n_past + n_new > cfg.n_ctx:
        raise ValueError(f"prefix {n_past} + suffix {n_new} positions exceed n_ctx={cfg.n_ctx}")
    if n_past:
        # Filler ids for the cached positions; their keys/values are overwritten in every layer.
        tokens = torch.cat([tokens.new_zeros(batch, n_past), tokens], dim=1)

    captured: list[list[Optional[Tensor]]] = [[None, None] for _ in range(cfg.n_layers)]

    def make_hook(layer: int, which: int):
        def hook(t: Tensor, hook: Any) -> Tensor:
            if n_past:
                past = past_kv.layers[layer].k if which == 0 else past_kv.layers[layer].v
                t = torch.cat([past.to(device=t.device, dtype=t.dtype), t[:, n_past:]], dim=1)
            captured[layer][which] = t
            return t

        return hook

    if n_past or return_kv:
        fwd_hooks = [
            (f"blocks.{l}.attn.hook_{name}", make_hook(l, j))
            for l in range(cfg.n_layers)
            for j, name in enumerate(("k", "v"))
        ]
        logits = model.bridge.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
    else:
        logits = model.bridge(tokens)
    logits = logits[:, n_past:]
    if not return_kv:
        return logits
    return logits, KVCache([LayerKV(k, v) for k, v in captured])  # type: ignore[arg-type]


__all__ = ["LayerKV", "KVCache", "capture_kv", "run_with_kv"]
