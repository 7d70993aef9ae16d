"""Distributed alignment search (DAS): which low-rank subspace of a representation does the model use?

Geiger et al. (2023/2024, "Finding alignments between interpretable causal variables and distributed
neural representations"): learn an orthonormal basis ``Q [F, k]`` of a representation ``x ∈ R^F``
such that swapping only the span of ``Q`` from a *source* run into a *base* run,

    x_hybrid = x_base + Q Qᵀ (x_source - x_base),

makes the model behave as the high-level causal model's counterfactual (:mod:`probe.interventions`:
the automaton with the source's value of one variable and the base's of the others). The basis is a
parametrised orthogonal matrix (``torch.nn.utils.parametrizations.orthogonal``) trained by gradient
descent on the counterfactual targets of training pairs; it is scored by interchange intervention
accuracy (IIA, :func:`probe.interventions.interchange_accuracy`) on held-out pairs.

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

Search (:func:`fit_das`), scoring (:func:`das_iia`) and the study (:func:`das_study`): for each rank in a
sweep, IIA in and out of distribution with the controls a reader needs -- a random subspace of the
same rank, the probe subspace of the same rank (the top-``k`` right singular vectors of a linear
probe's weights for the variable, fitted on the same representations), the whole-site swap (identity
basis), the same search on a random-init model, and the random-pair baseline.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probe.interventions import (CausalModel, _expected_sets, _logits, causal_model_for, interchange_accuracy,
                                 random_subspace, swap_state)

PARTS = ("ssm", "conv", "both")
SCORES = ("sets", "close")


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
    :func:`probe.interventions.interchange`; gradients flow to ``basis``. ``cache`` (a dict) keeps
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
    """An ``intervene`` for :func:`probe.interventions.interchange_accuracy` (``cache``: see
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


# --------------------------------------------------------------------------- the search


class RotatedSubspace(nn.Module):
    """``basis [F, k]`` with orthonormal columns, parametrised by
    ``torch.nn.utils.parametrizations.orthogonal`` (Householder for k < F, matrix exponential at k = F)."""

    def __init__(self, dim: int, rank: int, seed: int = 0, init: Optional[np.ndarray] = None):
        super().__init__()
        if not 1 <= rank <= dim:
            raise ValueError(f"rank must lie in [1, {dim}], got {rank}")
        self.map = nn.Linear(rank, dim, bias=False, dtype=torch.float64)
        nn.utils.parametrizations.orthogonal(self.map, "weight")
        q0 = random_subspace(dim, rank, seed).T if init is None else np.asarray(init, dtype=np.float64)
        with torch.no_grad():
            self.map.weight = torch.as_tensor(q0)

    @property
    def basis(self) -> Tensor:
        return self.map.weight


@dataclass
class DASConfig:
    """Search settings: ``steps`` Adam steps of ``batch`` pairs at learning rate ``lr``, training on the
    first ``horizon`` continuation positions; ``score`` as in :func:`interchange_accuracy`."""

    steps: int = 120
    batch: int = 64
    lr: float = 0.005
    schedule: str = "constant"  # or "cosine": the learning rate decays to 0 over the steps
    horizon: int = 4
    eval_every: int = 10
    tol: float = 1e-3
    score: str = "sets"
    decode: str = "sigmoid"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")


@dataclass
class _Group:
    """Training pairs that share split points, with their counterfactual targets."""

    tb: int
    base_tokens: Tensor  # [n, tb + H] (resid) or continuation [n, H] (state)
    x_base: Tensor  # [n, F]
    x_source: Tensor  # [n, F]
    state: Any  # base states (state sites)
    sets: Tensor  # [n, H, C] bool: counterfactual allowed sets
    mask: Tensor  # [n, H] bool: scored positions
    prefixes: tuple[list[str], list[str]] = ([], [])  # the base and source prefixes (for probes)


@dataclass
class DASData:
    """Training pairs encoded once (prefix runs done, no gradients): see :func:`prepare`."""

    site: Site
    groups: list[_Group] = field(default_factory=list)
    n_excluded: int = 0

    @property
    def dim(self) -> int:
        return int(self.groups[0].x_base.shape[1])

    @property
    def n(self) -> int:
        return sum(len(g.mask) for g in self.groups)

    def vectors(self) -> tuple[Tensor, list[str]]:
        """All base and source site vectors ``[2n, F]`` and their prefixes (e.g. for a probe)."""
        X = torch.cat([t for g in self.groups for t in (g.x_base, g.x_source)])
        return X, [p for g in self.groups for ps in g.prefixes for p in ps]


def _concat_states(states: Sequence[Any]) -> Any:
    first = states[0]
    layers = []
    for l, ls in enumerate(first.layers):
        layers.append(dataclasses.replace(ls, **{f: torch.cat([getattr(s.layers[l], f) for s in states])
                                                 for f in _fields(ls)}))
    return type(first)(layers=layers)


@torch.no_grad()
def prepare(model: Any, language: Any, pairs: Sequence[tuple[str, str, int, int]], variable: str, site: Site,
            cfg: DASConfig, causal: Optional[CausalModel] = None) -> DASData:
    """Run every prefix once and build the counterfactual targets of ``pairs`` for ``variable``.

    Pairs whose counterfactual is undefined, or whose base suffix is illegal at once in it, are
    excluded and counted. State sites merge all groups into one (the continuation needs no split)."""
    import languages as _languages
    from languages.datasets import Vocab, encode_batch

    causal = causal or causal_model_for(language)
    vocab = Vocab(language.alphabet)
    out_symbols = [_languages.END] + list(language.alphabet)
    col = {s: i for i, s in enumerate(out_symbols)}
    H = cfg.horizon
    data = DASData(site)
    by_split: dict[tuple[int, int], list[int]] = {}
    for i, (_, _, tb, ts) in enumerate(pairs):
        by_split.setdefault((tb, ts), []).append(i)
    for (tb, ts), idx in by_split.items():
        keep, sets, mask, pre_b, pre_s = [], [], [], [], []
        for i in idx:
            base, source = pairs[i][0], pairs[i][1]
            w = causal.witness(base[: tb - 1], source[: ts - 1], variable)
            want = None if w is None else _expected_sets(language, w, base[tb - 1:], H)
            if not want:
                data.n_excluded += 1
                continue
            s = torch.zeros(H, len(out_symbols), dtype=torch.bool)
            for k, a in enumerate(want):
                s[k, [col[c] for c in a]] = True
            keep.append(i)
            pre_b.append(base[: tb - 1])
            pre_s.append(source[: ts - 1])
            sets.append(s)
            mask.append(torch.arange(H) < len(want))
        if not keep:
            continue
        bt = torch.as_tensor(encode_batch(language, [pairs[i][0] for i in keep], vocab).tokens)
        st = torch.as_tensor(encode_batch(language, [pairs[i][1] for i in keep], vocab).tokens)
        x_b, state = site_vectors(model, bt, tb, site)
        x_s, _ = site_vectors(model, st, ts, site)
        cont = bt[:, tb: tb + H] if site.kind == "state" else bt[:, : tb + H]
        if cont.shape[1] < (H if site.kind == "state" else tb + H):  # pad to H continuation positions
            pad = (H if site.kind == "state" else tb + H) - cont.shape[1]
            cont = torch.cat([cont, cont.new_zeros(cont.shape[0], pad)], dim=1)
        data.groups.append(_Group(tb, cont, x_b, x_s, state, torch.stack(sets), torch.stack(mask), (pre_b, pre_s)))
    if not data.groups:
        raise ValueError(f"no pair has a defined {variable!r} counterfactual")
    if site.kind == "state" and len(data.groups) > 1:
        g = data.groups
        data.groups = [_Group(0, torch.cat([x.base_tokens for x in g]), torch.cat([x.x_base for x in g]),
                              torch.cat([x.x_source for x in g]), _concat_states([x.state for x in g]),
                              torch.cat([x.sets for x in g]), torch.cat([x.mask for x in g]),
                              ([p for x in g for p in x.prefixes[0]], [p for x in g for p in x.prefixes[1]]))]
    return data


def counterfactual_loss(logits: Tensor, sets: Tensor, mask: Tensor, score: str, decode: str,
                        close_cols: Sequence[int] = ()) -> Tensor:
    """Mean loss of ``logits [B, H, V]`` against counterfactual allowed sets ``[B, H, C]``.

    ``score="sets"``: binary cross-entropy per column (``decode="sigmoid"``) or minus the log
    probability mass on the allowed set (``softmax``). ``score="close"``: minus the log of
    p(counterfactual close) / Σ p(closes) at the positions with exactly one close allowed (the
    close-accuracy criterion's ratio), ``close_cols`` indexing the C columns."""
    from hooks.metrics import END_ID

    z = logits[..., END_ID:].double()
    lp = F.logsigmoid(z) if decode == "sigmoid" else torch.log_softmax(z, dim=-1)
    if score == "close":
        cc = torch.as_tensor(list(close_cols))
        tgt = sets[..., cc]
        where = mask & (tgt.sum(-1) == 1)
        lpc = lp[..., cc]
        ratio = (lpc.masked_fill(~tgt, -torch.inf).logsumexp(-1) - lpc.logsumexp(-1))
        return -(ratio[where]).sum() / where.sum().clamp_min(1)
    if decode == "sigmoid":
        bce = F.binary_cross_entropy_with_logits(z, sets.double(), reduction="none").sum(-1)
        return bce[mask].sum() / mask.sum().clamp_min(1)
    mass = lp.masked_fill(~sets, -torch.inf).logsumexp(-1)
    return -(mass[mask]).sum() / mask.sum().clamp_min(1)


def _group_logits(model: Any, g: _Group, site: Site, idx: Tensor, basis: Tensor) -> Tensor:
    x = hybrid(g.x_base[idx], g.x_source[idx], basis)
    if site.kind == "state":
        state = site.write(g.state.select(idx), x)
        return _logits(model(g.base_tokens[idx], state=state))
    # The swap is x_base + Q Qᵀ (x_source - x_base); the hook's live x equals x_base (same tokens).
    with subspace_swap(model, site.hook_name(model), basis, g.x_source[idx], g.tb - 1):
        return _logits(model(g.base_tokens[idx]))[:, g.tb:]


def _close_cols(language: Any) -> list[int]:
    import languages as _languages

    out_symbols = [_languages.END] + list(language.alphabet)
    return [out_symbols.index(c) for _, c in getattr(language, "pairs", None) or []]


def fit_das(model: Any, language: Any, data: DASData, rank: int, cfg: DASConfig,
            inits: Sequence[Optional[np.ndarray]] = (None,)) -> tuple[Tensor, dict[str, Any]]:
    """Train a rank-``rank`` rotation on ``data`` from each of ``inits`` (``[F, k]`` orthonormal
    columns; None: random); returns the basis with the lowest full-data loss seen (checked at the
    start and every ``cfg.eval_every`` steps) and ``{"loss", "init"}``.

    Keeping the best checkpoint matters on hand-set constructions, whose logits are so steep that an
    Adam step can leave an exact solution."""
    close_cols = _close_cols(language) if cfg.score == "close" else []
    best: tuple[float, Optional[Tensor], int] = (float("inf"), None, -1)
    with frozen(model), _short_scan(model):

        def full_loss(basis: Tensor) -> float:
            with torch.no_grad():
                tot = n = 0.0
                for g in data.groups:
                    for lo in range(0, len(g.mask), 256):
                        idx = torch.arange(lo, min(lo + 256, len(g.mask)))
                        m = float(g.mask[idx].sum())
                        tot += m * float(counterfactual_loss(_group_logits(model, g, data.site, idx, basis),
                                                             g.sets[idx], g.mask[idx], cfg.score, cfg.decode,
                                                             close_cols))
                        n += m
                return tot / max(n, 1.0)

        for j, init in enumerate(inits):
            if best[0] < cfg.tol:
                break
            torch.manual_seed(cfg.seed + j)
            rot = RotatedSubspace(data.dim, rank, seed=cfg.seed + j, init=init)
            opt = torch.optim.Adam(rot.parameters(), lr=cfg.lr)
            sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.steps, 1))
                     if cfg.schedule == "cosine" else None)
            rng = np.random.default_rng(cfg.seed + j)
            sizes = np.array([len(g.mask) for g in data.groups], dtype=float)
            for step in range(cfg.steps + 1):
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    basis = rot.basis.detach().clone()
                    loss = full_loss(basis)
                    if loss < best[0]:
                        best = (loss, basis, j)
                    if loss < cfg.tol or step == cfg.steps:
                        break
                g = data.groups[int(rng.choice(len(data.groups), p=sizes / sizes.sum()))]
                idx = torch.as_tensor(rng.choice(len(g.mask), size=min(cfg.batch, len(g.mask)), replace=False))
                loss_t = counterfactual_loss(_group_logits(model, g, data.site, idx, rot.basis), g.sets[idx],
                                             g.mask[idx], cfg.score, cfg.decode, close_cols)
                if not loss_t.requires_grad:  # e.g. rank = width 1: the only basis is fixed
                    break
                opt.zero_grad()
                loss_t.backward()
                opt.step()
                if sched is not None:
                    sched.step()
    return best[1], {"loss": best[0], "init": best[2]}


@contextlib.contextmanager
def _short_scan(model: Any) -> Iterator[None]:
    """HookedMamba's sequential scan inside (faster on the few continuation positions DAS trains on);
    the configured scan is restored on exit."""
    cfg = getattr(model, "cfg", None)
    old = getattr(cfg, "scan", None)
    if old is None or not hasattr(model, "init_state") or not hasattr(cfg, "d_conv"):
        yield
        return
    try:
        cfg.scan = "sequential"
        yield
    finally:
        cfg.scan = old


def das_iia(model: Any, language: Any, pairs: Sequence[tuple[str, str, int, int]], variable: str, site: Site,
            basis: Optional[Tensor], *, score: str = "sets", decode: str = "sigmoid", seed: int = 0,
            causal: Optional[CausalModel] = None, horizon: Optional[int] = None, cache: Optional[dict] = None):
    """IIA of the subspace swap (:func:`probe.interventions.interchange_accuracy` with this intervention);
    ``cache``: see :func:`rotated_interchange`."""
    return interchange_accuracy(model, language, pairs, list(site.layers), variable, causal=causal, seed=seed,
                                decode=decode, score=score, horizon=horizon,
                                intervene=intervention(site, basis, cache))


def probe_subspace(data: DASData, language: Any, variable: str, rank: int, causal: Optional[CausalModel] = None,
                   seed: int = 0, pad: bool = False) -> np.ndarray:
    """``[F, r]`` (r <= rank): the top right singular vectors of the weights of linear probes for what
    a swap of ``variable`` moves (:meth:`CausalModel.components`; Dyck ``top``: one probe per memory
    block), fitted on the training pairs' base and source site vectors (ridge for integer components
    with more than two values, logistic otherwise), in raw coordinates. ``pad``: complete to exactly
    ``rank`` columns with random orthonormal directions (an initialisation for the search)."""
    from probe.linear import LinearProbe

    causal = causal or causal_model_for(language)
    X, prefixes = data.vectors()
    X = X.double().numpy()
    comps = [causal.components(p, variable) for p in prefixes]
    groups = np.arange(len(X))  # one row per prefix: every row is its own sequence for the inner CV
    rows = []
    for c in range(len(comps[0])):
        y = [v[c] for v in comps]
        if len(set(map(str, y))) < 2:
            continue
        if all(isinstance(v, (int, np.integer)) for v in y) and len(set(y)) > 2:
            p = LinearProbe(kind="regression", alphas=(1.0, 10.0, 100.0), cv=2).fit(X, np.asarray(y, dtype=float),
                                                                                  groups=groups)
        else:
            labels = sorted(set(map(str, y)))
            p = LinearProbe(kind="classification", Cs=(1.0,), random_state=seed).fit(
                X, np.array([labels.index(str(v)) for v in y]), groups=groups)
        W = np.atleast_2d(np.asarray(p.coef_, dtype=np.float64))
        rows.append(W / max(np.linalg.norm(W), 1e-300))  # each component counts alike
    if not rows:
        raise ValueError(f"{variable!r} takes one value on every training prefix: nothing to probe")
    _, s, vt = np.linalg.svd(np.concatenate(rows), full_matrices=False)
    r = int(min(rank, (s > 1e-8 * s.max()).sum()))
    q = vt[:r].T
    if pad and r < rank:
        extra = random_subspace(q.shape[0], rank, seed).T
        extra = extra - q @ (q.T @ extra)
        u, sv, _ = np.linalg.svd(extra, full_matrices=False)
        q = np.concatenate([q, u[:, : rank - r]], axis=1)
    return q


# --------------------------------------------------------------------------- the study


@dataclass
class SweepSettings:
    """A rank sweep: ``ranks`` (capped at the site's width), the search (``cfg``), ``restarts`` random
    initialisations besides the probe-subspace one, and whether to repeat the search on a random-init
    model at the best rank (``random_init``)."""

    ranks: tuple[int, ...] = (1, 4, 16)
    cfg: DASConfig = field(default_factory=DASConfig)
    restarts: int = 0
    random_init: bool = True


def das_sweep(model: Any, language: Any, variable: str, site: Site, train: Sequence, test: Sequence,
              ood: Sequence = (), *, sweep: Optional[SweepSettings] = None, random_model: Any = None,
              causal: Optional[CausalModel] = None) -> list[dict[str, Any]]:
    """One record per rank: IIA (held-out ``test`` and ``ood`` pairs) of the learned subspace, with the
    random subspace and the probe subspace of the same rank, the whole-site swap (``layers``' whole
    state for state sites, the whole residual vector otherwise), the random-pair baseline, and, at the
    best rank only (``iia_random_init`` None elsewhere), the same search on ``random_model``."""
    sw = sweep or SweepSettings()
    cfg = sw.cfg
    causal = causal or causal_model_for(language)
    kw = dict(score=cfg.score, decode=cfg.decode, seed=cfg.seed, causal=causal)
    data = prepare(model, language, train, variable, site, cfg, causal)
    cache: dict = {}  # the test pairs' prefix runs, shared by every basis scored on them
    kw = dict(kw, cache=cache)
    if site.kind == "state":
        whole = interchange_accuracy(model, language, test, list(site.layers), variable, causal=causal,
                                     seed=cfg.seed, decode=cfg.decode, score=cfg.score)
    else:
        whole = das_iia(model, language, test, variable, site, None, **kw)
    records = []
    for rank in sorted({min(r, data.dim) for r in sw.ranks}):
        if rank == data.dim:  # every basis of full rank spans the site: nothing to learn, the swap is the site's
            basis, info = None, {"loss": float("nan"), "init": -1}
            res = whole if site.kind == "resid" else das_iia(model, language, test, variable, site, None, **kw)
            rnd = res
        else:
            inits = [probe_subspace(data, language, variable, rank, causal, cfg.seed, pad=True)] + [None] * sw.restarts
            basis, info = fit_das(model, language, data, rank, cfg, inits=inits)
            res = das_iia(model, language, test, variable, site, basis, **kw)
            rnd = das_iia(model, language, test, variable, site,
                          torch.as_tensor(random_subspace(data.dim, rank, cfg.seed + 101).T), **kw)
        res_ood = das_iia(model, language, ood, variable, site, basis, **kw) if ood else None
        p = probe_subspace(data, language, variable, rank, causal, cfg.seed)
        prb = res if p.shape[1] == data.dim == rank else das_iia(model, language, test, variable, site,
                                                                  torch.as_tensor(p), **kw)
        records.append({"variable": variable, "layers": [l + 1 for l in site.layers], "site": site.label,
                        "rank": rank, "dim": data.dim, "iia": res.iia,
                        "iia_ood": None if res_ood is None else res_ood.iia,
                        "iia_random_subspace": rnd.iia, "iia_probe_subspace": prb.iia, "probe_rank": int(p.shape[1]),
                        "iia_whole_swap": whole.iia, "iia_random_init": None, "baseline": res.baseline,
                        "n_pairs": res.n_pairs, "n_excluded": res.n_excluded, "train_pairs": data.n,
                        "train_loss": info["loss"], "init": {0: "probe", -1: "none (full rank)"}.get(info["init"], "random")})
    best = best_record(records)
    if sw.random_init and random_model is not None and best is not None:
        rdata = prepare(random_model, language, train, variable, site, cfg, causal)
        inits = [probe_subspace(rdata, language, variable, best["rank"], causal, cfg.seed, pad=True)]
        rb, _ = fit_das(random_model, language, rdata, best["rank"], cfg, inits=inits + [None] * sw.restarts)
        best["iia_random_init"] = das_iia(random_model, language, test, variable, site, rb, **kw).iia
    return records


def steering_direction(data: DASData, basis: Tensor, language: Any, variable: str = "depth",
                       causal: Optional[CausalModel] = None) -> np.ndarray:
    """``w [F]`` along a rank-1 learned direction ``q``, scaled so that ``w . x`` moves by one unit of
    ``variable`` (least-squares slope of ``q . x`` on the variable over the training prefixes): for
    :func:`probe.interventions.steer`, which adds ``amount * w / |w|^2``."""
    if basis.shape[1] != 1:
        raise ValueError(f"steering needs a rank-1 direction, got rank {basis.shape[1]}")
    causal = causal or causal_model_for(language)
    X, prefixes = data.vectors()
    y = np.array([float(causal.value(p, variable)) for p in prefixes])
    q = basis[:, 0].double().numpy()
    z = X.double().numpy() @ q
    slope = float(np.polyfit(y, z, 1)[0])
    if abs(slope) < 1e-12:
        raise ValueError(f"the direction does not vary with {variable!r}")
    return q / slope


def sweep_subject(model: Any, language: Any, variables: Mapping[str, Sequence[Sequence[int]]], *,
                  transformer: bool = False, window: tuple[int, int] = (20, 120),
                  ood_window: tuple[int, int] = (200, 400), n_train: int = 160, n_test: int = 48,
                  sweep: Optional[SweepSettings] = None, random_model: Any = None, seed: int = 0,
                  parts: Sequence[str] = ("ssm",)) -> list[dict[str, Any]]:
    """:func:`das_sweep` for each variable and each of its layer sets (0-based), on one set of pairs:
    ``n_train`` training pairs from ``window`` plus ``n_train // 2`` whose sources are longer (across
    lengths and depths), ``n_test`` held-out pairs from ``window`` and ``n_test`` from ``ood_window``.
    State sites for recurrent models (each of ``parts``: ``ssm``, ``conv``, ``both``), the residual
    stream at the split for Transformers."""
    from probe.interventions import sample_pairs

    lo, hi = window
    train = (sample_pairs(language, n_train, lo, hi, seed=seed + 21, group=16)
             + sample_pairs(language, n_train // 2, lo, hi, seed=seed + 22, group=16, source_window=(hi, 2 * hi)))
    test = sample_pairs(language, n_test, lo, hi, seed=seed + 7, group=16)
    ood = sample_pairs(language, n_test, *ood_window, seed=seed + 23, group=16)
    out = []
    for variable, layer_sets in variables.items():
        for layers in layer_sets:
            sites = ([Site("resid", tuple(layers))] if transformer
                     else [Site("state", tuple(layers), part) for part in parts])
            for site in sites:
                out += das_sweep(model, language, variable, site, train, test, ood, sweep=sweep,
                                 random_model=random_model)
    return out


def best_per_site(sweep: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best rank (:func:`best_record`) per variable and site (layer set and part) of a sweep."""
    groups: dict[tuple, list[dict]] = {}
    for r in sweep:
        groups.setdefault((r["variable"], tuple(r["layers"]), r.get("site")), []).append(r)
    return [best_record(g) for g in groups.values()]


def best_record(records: Sequence[dict[str, Any]], slack: float = 0.02) -> Optional[dict[str, Any]]:
    """The smallest rank whose IIA is within ``slack`` of the sweep's best (None for no records)."""
    if not records:
        return None
    top = max(r["iia"] for r in records)
    return min((r for r in records if r["iia"] >= top - slack), key=lambda r: r["rank"])
