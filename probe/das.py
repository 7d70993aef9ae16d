"""Distributed alignment search (DAS): which low-rank subspace of a representation does the model use?

Geiger et al. (2023/2024, "Finding alignments between interpretable causal variables and distributed
neural representations"): learn an orthonormal basis ``Q [F, k]`` of a representation ``x ∈ R^F``
such that swapping only the span of ``Q`` from a *source* run into a *base* run,

    x_hybrid = x_base + Q Qᵀ (x_source - x_base),

makes the model behave as the high-level causal model's counterfactual (:mod:`probe.causal_models`:
the automaton with the source's value of one variable and the base's of the others). The basis is a
parametrised orthogonal matrix (``torch.nn.utils.parametrizations.orthogonal``) trained by gradient
descent on the counterfactual targets of training pairs; it is scored by interchange intervention
accuracy (IIA, :func:`probe.interchange.interchange_accuracy`) on held-out pairs.

Glossary (shapes): ``B`` pairs in a batch, ``F`` the representation's width, ``k`` the rank,
``H`` continuation positions used in training, ``C`` output columns (END + alphabet).

Sites (:class:`Site`)
---------------------
* ``Site("state", layers, part)`` -- the recurrent state at the split (HookedMamba: ``ssm`` =
  ``h_T [E, N]`` per layer, ``conv`` = the conv window ``[E, K-1]``, ``both``; diagonal SSMs and
  constructions: ``ssm``), of any set of layers at once, flattened and concatenated. The swap runs
  through the model's state API: run the base and source prefixes with ``return_state=True``, write
  the hybrid into a copy of the base state and continue the base suffix from it
  (:func:`rotated_interchange`); the per-position equivalent through ``hook_ssm_state`` is
  :func:`subspace_swap` (the recurrence carries the edit forward), tested equal.
* ``Site("resid", (l,))`` -- a Transformer's residual stream after block ``l`` at the last prefix
  position, swapped by a forward hook (:func:`subspace_swap`) in one run over the base string.

This module holds the sites, the swap and its scoring (:func:`das_iia`); the search (the rotation,
the training pairs, :func:`probe.das_search.fit_das`, the probe subspace) is :mod:`probe.das_search`,
and the rank sweep with its controls (:func:`probe.das_study.das_sweep`: for each rank, IIA in and out
of distribution beside a random subspace of the same rank, the probe subspace of the same rank, the
whole-site swap, the same search on a random-init model and the random-pair baseline) is
:mod:`probe.das_study`.
"""
from __future__ import annotations
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from probe.causal_models import CausalModel
from probe.interchange import _logits, interchange_accuracy, swap_state

PARTS = ("ssm", "conv", "both")


# --------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class Site:
    """Where the rotation acts (see the module docstring): ``kind`` ``state`` or ``resid``."""

    kind: str
    layers: tuple[int, ...]
    part: str = "ssm"

    def __post_init__(self) -> None:
        if self.kind not in ("state", "resid"):
            raise ValueError(f"site kind must be 'state' or 'resid', got {self.kind!r}")
        if not self.layers:
            raise ValueError("a site needs at least one layer")
        if self.kind == "state" and self.part not in PARTS:
            raise ValueError(f"state part must be one of {PARTS}, got {self.part!r}")
        if self.kind == "resid" and len(self.layers) != 1:
            raise ValueError("a residual-stream site is one layer (a later layer's base value depends on the "
                             "earlier swap); use one Site per layer")

    @property
    def label(self) -> str:
        ls = "+".join(str(l + 1) for l in self.layers)
        return f"L{ls} {self.part}" if self.kind == "state" else f"L{ls} resid"

    def _tensors(self, layer_state: Any) -> list[str]:
        if self.part == "both":
            return ["ssm", "conv"]
        if not hasattr(layer_state, self.part):
            raise ValueError(f"this model's layer state has no {self.part!r} (it has {_fields(layer_state)})")
        return [self.part]

    def read(self, state: Any) -> Tensor:
        """``[B, F]``: the site's tensors of ``state`` (a :class:`hooks.state.LayeredState`), flattened."""
        parts = []
        for l in self.layers:
            ls = state.layers[l]
            parts += [getattr(ls, name).flatten(1) for name in self._tensors(ls)]
        return torch.cat(parts, dim=1)

    def write(self, state: Any, x: Tensor) -> Any:
        """A copy of ``state`` whose site tensors are ``x [B, F]`` (the other layers are shared)."""
        out = swap_state(state, state, [])
        i = 0
        for l in self.layers:
            ls = state.layers[l]
            new = {}
            for name in self._tensors(ls):
                t = getattr(ls, name)
                n = t[0].numel()
                new[name] = x[:, i:i + n].reshape(t.shape).to(t.dtype)
                i += n
            out.layers[l] = dataclasses.replace(ls, **new)
        if i != x.shape[1]:
            raise ValueError(f"x has {x.shape[1]} features, the site {self.label} has {i}")
        return out

    def hook_name(self, model: Any) -> str:
        """The per-position hook that carries the site (state ``ssm`` of one layer, or ``resid``)."""
        (l,) = self.layers if len(self.layers) == 1 else (None,)
        if l is None or (self.kind == "state" and self.part != "ssm"):
            raise ValueError(f"site {self.label} has no single per-position hook")
        if self.kind == "resid":
            return f"blocks.{l}.hook_resid_post"
        name = f"blocks.{l}.mixer.hook_ssm_state"
        return name if name in model.hook_dict else f"blocks.{l}.hook_ssm_state"


def _fields(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []


def default_site(model: Any, layers: Sequence[int]) -> Site:
    """``state``/``ssm`` for recurrent models (they have ``init_state``), else ``resid``."""
    return Site("state", tuple(layers)) if hasattr(model, "init_state") else Site("resid", tuple(layers))


@torch.no_grad()
def site_vectors(model: Any, tokens: Tensor, split: int, site: Site) -> tuple[Tensor, Any]:
    """``(x [B, F], state)``: the site after the prefix ``tokens[:, :split]`` (state: recurrent models)."""
    if site.kind == "state":
        _, state = model(tokens[:, :split], return_state=True)
        return site.read(state), state
    name = site.hook_name(model)
    got = {}

    def keep(act: Tensor, hook: Any = None) -> None:
        got["x"] = act[:, split - 1].detach().flatten(1)

    with model.hooks(fwd_hooks=[(name, keep)]):
        model(tokens[:, :split])
    return got["x"], None


def hybrid(x_base: Tensor, x_source: Tensor, basis: Optional[Tensor]) -> Tensor:
    """``x_base + Q Qᵀ (x_source - x_base)`` (``basis=None``: the whole site, ``x_source``)."""
    if basis is None:
        return x_source
    q = basis.to(x_base.dtype)
    return x_base + ((x_source - x_base) @ q) @ q.T


# --------------------------------------------------------------------------- the intervention


@contextlib.contextmanager
def subspace_swap(model: Any, hook_name: str, basis: Optional[Tensor], source: Tensor, position: int
                  ) -> Iterator[Any]:
    """Within this block, the model's ``hook_name`` activation at ``position`` is replaced by
    ``hybrid(act, source, basis)`` (``source [B, F]``, the flattened source activation).

    Runs through the model's own hooks (``model.hooks``), so the model is restored on exit; on a
    HookedMamba ``hook_ssm_state`` (overwrite mode) the recurrence carries the edit forward. On the
    last layer this equals the state-API swap of :func:`rotated_interchange` (tested); on a lower
    layer it differs by design: the edited state's output at ``position`` also reaches the layers
    above at that same step, whereas the state swap happens between steps (after every layer has
    read the base's step), which is what the causal model's counterfactual describes.
    """

    def hook(act: Tensor, hook: Any = None) -> Tensor:
        x = act[:, position].flatten(1)
        new = hybrid(x, source.to(act.dtype), basis).reshape(act[:, position].shape).to(act.dtype)
        return torch.cat([act[:, :position], new[:, None], act[:, position + 1:]], dim=1)

    with model.hooks(fwd_hooks=[(hook_name, hook)]):
        yield model


def rotated_interchange(model: Any, base_tokens: Tensor, source_tokens: Tensor, base_split: int,
                        source_split: int, site: Site, basis: Optional[Tensor],
                        cache: Optional[dict] = None) -> Tensor:
    """Logits of the base continuation (positions ``base_split..``) after swapping the span of
    ``basis [F, k]`` (None: the whole site) of ``site`` from the source. The contract of
    :func:`probe.interchange.interchange`; gradients flow to ``basis``. ``cache`` (a dict) keeps
    the prefix runs between calls on the same pairs (e.g. several bases scored on one test set)."""
    x_s, _ = _prefix_vectors(cache, model, source_tokens, source_split, site)
    if site.kind == "state":
        x_b, state_b = _prefix_vectors(cache, model, base_tokens, base_split, site)
        state = site.write(state_b, hybrid(x_b, x_s, basis))
        return _logits(model(base_tokens[:, base_split:], state=state))
    with subspace_swap(model, site.hook_name(model), basis, x_s, base_split - 1):
        return _logits(model(base_tokens))[:, base_split:]


def _prefix_vectors(cache: Optional[dict], model: Any, tokens: Tensor, split: int, site: Site) -> tuple[Tensor, Any]:
    """:func:`site_vectors`, looked up in ``cache`` (keyed by model, site, split and the tokens) when given."""
    if cache is None:
        return site_vectors(model, tokens, split, site)
    key = (id(model), site, split, tuple(tokens.shape), tokens[:, :split].numpy().tobytes())
    if key not in cache:
        cache[key] = site_vectors(model, tokens, split, site)
    return cache[key]


def intervention(site: Site, basis: Optional[Tensor], cache: Optional[dict] = None) -> Callable[..., Tensor]:
    """An ``intervene`` for :func:`probe.interchange.interchange_accuracy` (``cache``: see
    :func:`rotated_interchange`)."""
    b = None if basis is None else basis.detach()

    def run(model: Any, bt: Tensor, st: Tensor, tb: int, ts: int) -> Tensor:
        with torch.no_grad():
            return rotated_interchange(model, bt, st, tb, ts, site, b, cache)

    return run


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters without gradients and eval mode inside; both restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


def das_iia(model: Any, language: Any, pairs: Sequence[tuple[str, str, int, int]], variable: str, site: Site,
            basis: Optional[Tensor], *, score: str = "sets", decode: str = "sigmoid", seed: int = 0,
            causal: Optional[CausalModel] = None, horizon: Optional[int] = None, cache: Optional[dict] = None):
    """IIA of the subspace swap (:func:`probe.interchange.interchange_accuracy` with this intervention);
    ``cache``: see :func:`rotated_interchange`."""
    return interchange_accuracy(model, language, pairs, list(site.layers), variable, causal=causal, seed=seed,
                                decode=decode, score=score, horizon=horizon,
                                intervene=intervention(site, basis, cache))
