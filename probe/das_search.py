"""The DAS search (:mod:`probe.das`): a rank-``k`` rotation (:class:`RotatedSubspace`) trained on the
counterfactual targets of training pairs (:func:`prepare`, :func:`fit_das`), its probe-subspace
initialisation and control (:func:`probe_subspace`), and a steering direction from a learned one
(:func:`steering_direction`).

Shapes as in :mod:`probe.das`: ``B`` pairs, ``F`` the site's width, ``k`` the rank, ``H`` continuation
positions trained on, ``C`` output columns (END + alphabet).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from languages.datasets import encode_batch
from languages.vocab import FIRST_OUTPUT_ID, Vocab
from probe.causal_models import CausalModel, causal_model_for
from probe.das import Site, _fields, frozen, hybrid, site_vectors, subspace_swap
from probe.interchange import _expected_sets, _logits
from probe.linear import LinearProbe
from probe.subspace_edits import random_subspace

SCORES = ("sets", "close")

# --------------------------------------------------------------------------- the search


#: How :class:`RotatedSubspace` keeps its columns orthonormal: ``qr`` (the default) or ``householder``
#: (torch's ``parametrizations.orthogonal``, the reference). Measured on one core (2-layer HookedMamba
#: state, forward + backward of the basis alone): F = 1216, k = 8: 1.2 ms (qr) vs 0.34 s (householder);
#: F = 2432, k = 64: 32 ms vs 7.4 s. The Householder map's trivialisation multiplies by an [F, F] base
#: and its backward is quadratic in F, so it dominated every DAS step on trained models.
ROTATIONS = ("qr", "householder")


class QROrthonormal(nn.Module):
    """Parametrisation ``W [F, k] -> Q [F, k]``: the Q factor of the reduced QR of ``W`` with the signs
    that make ``diag(R)`` positive (smooth and unique wherever ``W`` has full column rank; O(F k^2)
    forward and backward). Q does not depend on the columns' scale, so the free matrix is stored as
    ``Q / 2`` (:meth:`right_inverse`): an Adam step of ``lr`` (about ``lr`` on every entry) then turns
    a column by about ``2 lr sqrt(F)`` radians, as the Householder map's step does from its
    trivialisation (whose tangent coordinates start at zero), so learning rates carry over."""

    scale = 0.5

    def forward(self, W: Tensor) -> Tensor:
        q, r = torch.linalg.qr(W)
        d = torch.diagonal(r)
        return q * torch.where(d < 0, -1.0, 1.0).to(q.dtype)

    def right_inverse(self, Q: Tensor) -> Tensor:
        return Q * self.scale


class RotatedSubspace(nn.Module):
    """``basis [F, k]`` with orthonormal columns: a free matrix through :class:`QROrthonormal`
    (``rotation="qr"``) or ``torch.nn.utils.parametrizations.orthogonal`` (``"householder"``, for
    k < F; the matrix exponential at k = F); both start at ``init`` (default: a seeded random
    subspace)."""

    def __init__(self, dim: int, rank: int, seed: int = 0, init: Optional[np.ndarray] = None, rotation: str = "qr"):
        super().__init__()
        if not 1 <= rank <= dim:
            raise ValueError(f"rank must lie in [1, {dim}], got {rank}")
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
        self.map = nn.Linear(rank, dim, bias=False, dtype=torch.float64)
        if rotation == "qr":
            nn.utils.parametrize.register_parametrization(self.map, "weight", QROrthonormal())
        else:
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
    rotation: str = "qr"  # how the basis stays orthonormal: see ROTATIONS
    horizon: int = 4
    eval_every: int = 10
    tol: float = 1e-3
    score: str = "sets"
    decode: str = "sigmoid"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}, got {self.rotation!r}")
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
    z = logits[..., FIRST_OUTPUT_ID:].double()
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
            rot = RotatedSubspace(data.dim, rank, seed=cfg.seed + j, init=init, rotation=cfg.rotation)
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


def probe_subspace(data: DASData, language: Any, variable: str, rank: int, causal: Optional[CausalModel] = None,
                   seed: int = 0, pad: bool = False) -> np.ndarray:
    """``[F, r]`` (r <= rank): the top right singular vectors of the weights of linear probes for what
    a swap of ``variable`` moves (:meth:`CausalModel.components`; Dyck ``top``: one probe per memory
    block), fitted on the training pairs' base and source site vectors (ridge for integer components
    with more than two values, logistic otherwise), in raw coordinates. ``pad``: complete to exactly
    ``rank`` columns with random orthonormal directions (an initialisation for the search)."""
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


def steering_direction(data: DASData, basis: Tensor, language: Any, variable: str = "depth",
                       causal: Optional[CausalModel] = None) -> np.ndarray:
    """``w [F]`` along a rank-1 learned direction ``q``, scaled so that ``w . x`` moves by one unit of
    ``variable`` (least-squares slope of ``q . x`` on the variable over the training prefixes): for
    :func:`probe.subspace_edits.steer`, which adds ``amount * w / |w|^2``."""
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
