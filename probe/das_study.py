"""The DAS study: a rank sweep per variable and site with the controls a reader needs
(:func:`das_sweep`, :func:`sweep_subject`), and the best rank per site (:func:`best_per_site`).

Each record: IIA of the learned subspace (held-out pairs, in and out of distribution), of a random
subspace and of the probe subspace of the same rank, of the whole-site swap, the random-pair
baseline, and at the best rank the same search on a random-init model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch

from probe.causal_models import CausalModel, causal_model_for
from probe.das import Site, das_iia
from probe.das_search import DASConfig, fit_das, prepare, probe_subspace
from probe.interchange import interchange_accuracy, sample_pairs
from probe.subspace_edits import random_subspace



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
