"""Probe a grid of (site, variable) pairs with controls and baselines; a tidy table of the results.

One :class:`ProbeRecord` per (site, variable):

* ``site``, ``layer`` (0-based, parsed from ``blocks.{l}.``; None for e.g. ``hook_embed``), ``variable``,
  ``kind`` (classification / regression), ``metric`` (``accuracy`` / ``r2``), ``score`` (held-out test
  collection), ``accuracy_rounded`` (regression only: rounded predictions), ``hyper`` (chosen C or alpha),
  ``n_train``, ``n_test``;
* ``control`` and ``selectivity`` = score - control (Hewitt & Liang: each token type gets a label drawn
  from the training label marginal; same probe class and the task probe's hyperparameters);
* ``majority`` (majority class accuracy, or R^2 of the training mean);
* ``random_init`` (the same probe, CV included, on the same positions of a random-init model of the same
  architecture -- pass its train/test collections);
* ``input_token`` (probe on the one-hot current token) and ``input_counts`` (probe on the prefix symbol
  counts -- depth is linear in them);
* ``ood``: per OOD bin ``b`` an :class:`OODScore` -- ``score`` of the task probe fit on the training
  collection, ``accuracy_rounded`` (regression), and when the collections carry ``depth_var``:
  ``n_deep`` OOD positions deeper than any training position and the ``deep`` score on them;
* optional (``mdl=True``): ``mdl_bits``, ``mdl_compression`` (online code on the training rows).

A baseline that was not run is None. :meth:`ProbeRecord.as_dict` is the flat form (the OOD scores as
``ood_b``, ``ood_b_rounded``, ``n_ood_b_deep``, ``ood_b_deep``; baselines not run left out) that
:func:`format_table` renders.

Categorical codes of the test/OOD/random-init collections are re-coded into the training collection's
classes (unseen values can never be predicted and count as errors).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from trained_models.tables import markdown_table

from .collect import layer_of
from .collection import Collection
from .conditional import ConditionalProbe
from .linear import LinearProbe, apply_control, control_mapping, majority_baseline, with_hyperparameters
from .mdl import online_code_length

__all__ = ["DEFAULT_BASELINES", "OODScore", "ProbeRecord", "format_table", "length_bins", "probe_given", "probe_grid"]

DEFAULT_BASELINES = ("control", "majority", "random_init", "input_token", "input_counts")


@dataclasses.dataclass
class OODScore:
    """The task probe on one out-of-distribution collection."""

    score: float  # the record's metric (accuracy or R^2)
    accuracy_rounded: Optional[float] = None  # regression: accuracy of the rounded predictions
    n_deep: Optional[int] = None  # positions deeper than any training position (with ``depth_var``)
    deep: Optional[float] = None  # the score on them (when there are any)

    @property
    def accuracy(self) -> float:
        """Accuracy: the score of a classifier, the rounded readout's of a regression."""
        return self.score if self.accuracy_rounded is None else self.accuracy_rounded


@dataclasses.dataclass(kw_only=True)
class ProbeRecord:
    """One (site, variable) probe of :func:`probe_grid` with its baselines (see the module docstring)."""

    site: str
    layer: Optional[int]
    variable: str
    kind: str  # "classification" | "regression"
    metric: str  # "accuracy" | "r2"
    score: float
    accuracy_rounded: Optional[float] = None  # regression: accuracy of the rounded predictions
    hyper: Optional[float]  # the chosen C (classification) or alpha (regression)
    n_train: int
    n_test: int
    control: Optional[float] = None
    selectivity: Optional[float] = None
    majority: Optional[float] = None
    input_token: Optional[float] = None
    input_counts: Optional[float] = None
    random_init: Optional[float] = None
    ood: dict[str, OODScore] = dataclasses.field(default_factory=dict)
    mdl_bits: Optional[float] = None
    mdl_compression: Optional[float] = None

    @property
    def accuracy(self) -> float:
        """Held-out accuracy: the score of a classifier, the rounded readout's of a regression."""
        return self.accuracy_rounded if self.kind == "regression" else self.score

    @property
    def r2(self) -> Optional[float]:
        """Held-out R^2 of a regression (None for a classifier)."""
        return self.score if self.kind == "regression" else None

    def as_dict(self) -> dict[str, Any]:
        """The flat form: every field, OOD scores as ``ood_b`` / ``ood_b_rounded`` / ``n_ood_b_deep`` /
        ``ood_b_deep``; baselines and scores that were not computed are left out."""
        flat: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "ood":
                for name, o in v.items():
                    named = ((f"ood_{name}", o.score), (f"ood_{name}_rounded", o.accuracy_rounded),
                             (f"n_ood_{name}_deep", o.n_deep), (f"ood_{name}_deep", o.deep))
                    flat.update({k: x for k, x in named if x is not None})
            elif v is not None or f.name in _ALWAYS:
                flat[f.name] = v
        return flat


_ALWAYS = ("site", "layer", "variable", "kind", "metric", "score", "hyper", "n_train", "n_test")


def length_bins(collection: Collection, edges: Sequence[int]) -> dict[str, Collection]:
    """Split by string length into bins ``[edges[i], edges[i+1])`` named ``"lo-hi"`` (hi inclusive)."""
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (collection.length >= lo) & (collection.length < hi)
        if mask.any():
            out[f"{lo}-{hi - 1}"] = collection.subset(np.flatnonzero(mask))
    return out


def _labels_like(coll: Collection, var: str, train: Collection) -> np.ndarray:
    if train.kinds[var] == "categorical":
        return coll.codes_for(var, train.classes[var])
    return coll.labels[var]


def _control_score(kind, Xtr, ctr_tr, Xte, ctr_te, groups, params, seed, probe) -> float:
    """The control task's held-out score. With few token types the control mapping can give every
    token the same label; no classifier can be fit then, and the task is solved by that constant:
    its accuracy is the share of test labels equal to it."""
    if kind == "classification" and len(np.unique(ctr_tr)) < 2:
        return float(np.mean(ctr_te == ctr_tr[0]))
    return float(_fit_score(kind, Xtr, ctr_tr, Xte, ctr_te, groups, params, seed, fixed_from=probe)[1])


def _fit_score(kind, Xtr, ytr, Xte, yte, groups, params, seed, fixed_from=None):
    probe = (with_hyperparameters(fixed_from) if fixed_from is not None
             else LinearProbe(kind=kind, random_state=seed, **params))
    probe.fit(Xtr, ytr, groups=groups)
    return probe, probe.score(Xte, yte)


def probe_grid(
    collection_train: Collection,
    collection_test: Collection,
    variables: Sequence[str] | None = None,
    sites: Sequence[str] | None = None,
    ood: Mapping[str, Collection] | None = None,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    random_init: tuple[Collection, Collection] | None = None,
    seed: int = 0,
    probe_params: dict | None = None,
    depth_var: str | None = "depth",
    mdl: bool = False,
) -> list[ProbeRecord]:
    """Fit one probe per (site, variable) on ``collection_train``, score it on ``collection_test`` (and
    the ``ood`` bins) with the baselines named in ``baselines``. See the module docstring for the fields.

    ``probe_params`` go to :class:`probe.linear.LinearProbe` (e.g. ``{"Cs": (1.0,), "max_iter": 50}``).
    CV inside the probe groups rows by sequence id.
    """
    tr, te = collection_train, collection_test
    variables = list(variables) if variables is not None else tr.variables
    sites = list(sites) if sites is not None else tr.sites
    params = dict(probe_params or {})
    ood = dict(ood or {})
    baselines = set(baselines)

    inputs = {}
    if "input_token" in baselines:
        inputs["input_token"] = (tr.token_onehot(), _pad_cols(te.token_onehot(), tr.token_onehot().shape[1]))
    if "input_counts" in baselines and tr.alphabet:
        inputs["input_counts"] = (tr.prefix_counts(), te.prefix_counts())

    records = []
    for var in variables:
        if var not in tr.labels:
            raise KeyError(f"variable {var!r} not collected (have {tr.variables})")
        kind = "classification" if tr.kinds[var] == "categorical" else "regression"
        metric = "accuracy" if kind == "classification" else "r2"
        ytr = tr.labels[var]
        yte = _labels_like(te, var, tr)
        common = {}
        if "majority" in baselines:
            common["majority"] = majority_baseline(ytr, yte, kind)
        for name, (Xa, Xb) in inputs.items():
            common[name] = _fit_score(kind, Xa, ytr, Xb, yte, tr.seq_id, params, seed)[1]
        if "control" in baselines:
            valid = ~np.isnan(ytr) if kind == "regression" else np.ones(len(ytr), bool)
            mapping = control_mapping(tr.token[valid], ytr[valid], seed)
            ctr_tr = apply_control(tr.token, mapping, seed, marginal=ytr[valid]).astype(ytr.dtype)
            ctr_te = apply_control(te.token, mapping, seed, marginal=ytr[valid]).astype(ytr.dtype)
            if kind == "regression":
                ctr_tr[~valid] = np.nan
                ctr_te[np.isnan(yte)] = np.nan

        for site in sites:
            Xtr, Xte = tr.acts[site], te.acts[site]
            probe, score = _fit_score(kind, Xtr, ytr, Xte, yte, tr.seq_id, params, seed)
            rec = ProbeRecord(
                site=site, layer=layer_of(site), variable=var, kind=kind, metric=metric, score=float(score),
                accuracy_rounded=probe.accuracy(Xte, yte) if kind == "regression" else None,
                hyper=getattr(probe.probe_, "C_", None) if kind == "classification" else probe.probe_.alpha_,
                n_train=len(tr), n_test=len(te), **common)
            if "control" in baselines:
                rec.control = _control_score(kind, Xtr, ctr_tr, Xte, ctr_te, tr.seq_id, params, seed, probe)
                rec.selectivity = float(score - rec.control)
            if random_init is not None and "random_init" in baselines:
                rtr, rte = random_init
                rec.random_init = float(_fit_score(
                    kind, rtr.acts[site], _labels_like(rtr, var, tr), rte.acts[site],
                    _labels_like(rte, var, tr), rtr.seq_id, params, seed)[1])
            for name, coll in ood.items():
                deep = None
                if depth_var and depth_var in tr.labels and depth_var in coll.labels:
                    deep = coll.labels[depth_var] > np.nanmax(tr.labels[depth_var])
                rec.ood[name] = _ood_score(probe, kind, coll.acts[site], _labels_like(coll, var, tr), deep)
            if mdl:
                code = online_code_length(Xtr, ytr, kind=kind, seed=seed)
                rec.mdl_bits, rec.mdl_compression = code["online_bits"], code["compression"]
            records.append(rec)
    return records


def _ood_score(probe, kind: str, X: np.ndarray, y: np.ndarray, deep: Optional[np.ndarray]) -> OODScore:
    """The task probe on one OOD collection; ``deep`` marks the rows deeper than any training row."""
    out = OODScore(score=float(probe.score(X, y)),
                   accuracy_rounded=probe.accuracy(X, y) if kind == "regression" else None)
    if deep is not None:
        out.n_deep = int(deep.sum())
        if deep.any():
            out.deep = float(probe.score(X[deep], y[deep]))
    return out


def probe_given(
    collection_train: Collection,
    collection_test: Collection,
    variable: str,
    site: str,
    given: str,
    probe_params: dict | None = None,
    seed: int = 0,
) -> dict:
    """Probe ``variable`` from ``site`` with one linear probe per value of the variable ``given``
    (e.g. ``top`` given ``depth``): "linearly readable once ``given`` is known". This is how the
    top bracket is read from a Dyck construction's layer-2 state, where each depth has its own memory
    block and the block of the current depth is selected by the depth (a product, not a linear map).

    Returns ``{"score", "metric", "per_value": {value: (score, n_test)}, "n_test"}``; ``score`` is
    pooled over all test rows, rows whose ``given`` value has no training rows counting as errors
    (classification) or being left out (regression).
    """
    tr, te = collection_train, collection_test
    kind = "classification" if tr.kinds[variable] == "categorical" else "regression"
    ytr, yte = tr.labels[variable], _labels_like(te, variable, tr)
    gtr, gte = tr.labels[given], _labels_like(te, given, tr)
    Xte = te.acts[site]
    cp = ConditionalProbe(kind=kind, random_state=seed, probe_params=probe_params)
    cp.fit(tr.acts[site], ytr, gtr, groups=tr.seq_id)
    pred = cp.predict(Xte, gte)
    per_value = {}
    for v in np.unique(gte[~np.isnan(gte)] if gte.dtype.kind == "f" else gte):
        rows = np.flatnonzero(gte == v)
        value = tr.classes[given][int(v)] if tr.kinds[given] == "categorical" and v >= 0 else v
        value = value.item() if isinstance(value, np.generic) else value
        if v.item() not in cp.probes_:
            per_value[value] = (float("nan"), len(rows))
        elif kind == "classification":
            per_value[value] = (float(np.mean(pred[rows] == yte[rows])), len(rows))  # every row covered
        else:
            keep = rows[~np.isnan(yte[rows])]
            per_value[value] = (cp.probes_[v.item()].score(Xte[keep], yte[keep]) if len(keep) > 1 else float("nan"),
                                len(keep))
    score = cp.score(Xte, yte, gte)
    metric = "accuracy" if kind == "classification" else "r2"
    return {"score": float(score), "metric": metric, "per_value": per_value, "n_test": len(yte)}


def _pad_cols(X: np.ndarray, width: int) -> np.ndarray:
    if X.shape[1] == width:
        return X
    out = np.zeros((X.shape[0], width), dtype=X.dtype)
    k = min(width, X.shape[1])
    out[:, :k] = X[:, :k]
    return out


_FIRST = ["site", "layer", "variable", "metric", "score", "accuracy_rounded", "control", "selectivity",
          "majority", "random_init", "input_token", "input_counts"]
_LAST = ["hyper", "n_train", "n_test"]


def format_table(records: Sequence[ProbeRecord | Mapping[str, Any]], columns: Sequence[str] | None = None,
                 digits: int = 3) -> str:
    """Markdown table of ``records`` (their :meth:`ProbeRecord.as_dict` form); columns default to every
    key present, in a fixed order."""
    if not records:
        return "(no records)"
    rows = [r.as_dict() if isinstance(r, ProbeRecord) else r for r in records]
    if columns is None:
        keys = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        columns = ([k for k in _FIRST if k in keys] + [k for k in keys if k not in _FIRST + _LAST + ["kind"]]
                   + [k for k in _LAST if k in keys])

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float):
            if math.isnan(v):
                return "nan"
            return f"{v:.{digits}g}" if (abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3)) else f"{v:.{digits}f}"
        return str(v)

    return "\n".join(markdown_table(columns, ([r.get(c) for c in columns] for r in rows), cell=cell))
