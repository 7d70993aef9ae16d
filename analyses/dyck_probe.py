"""Do trained models' states match the paper's Dyck(K, h) construction, and do they use them?

::

    python -m analyses.dyck_probe                       # shipped Dyck(8,10) models + the construction
    python -m analyses.dyck_probe --quick               # a smaller, faster pass
    python -m analyses.dyck_probe --model runs/my-dyck-run --model dyck8-10-mamba-2l --out outputs/x

For every model (the construction first, as the reference) the report gives

1. task accuracy: close accuracy on held-out strings in the training lengths and on longer ones;
2. probes, per layer and site: depth (ridge, accuracy of the rounded readout) and top bracket
   (logistic), with selectivity against a control task, the majority class, the same probe on a
   random-init model, input-only baselines, and accuracy out of distribution (longer strings);
3. interchange intervention accuracy (IIA) per layer for the construction's two variables, depth
   and top-of-stack memory, with a random-pair baseline, scored by close accuracy at the
   counterfactual (:data:`IIA_SCORE`);
4. alignment of the model's states with the construction's (held-out linear-map R², linear CKA);
5. distributed alignment search (:mod:`probe.das`): per variable and layer set, the IIA of a learned
   rank-k subspace of the recurrent state (Transformer: the residual stream at the split) against a
   rank sweep, with the random and probe subspaces of the same rank, the whole-layer swap, the same
   search on a random-init model and the random-pair baseline (``models[name]["das"]`` holds the best
   rank per variable and site, ``das_sweep`` every rank);
6. layer x position activation patching of the top bracket (:mod:`probe.patching`);
7. a verdict built on 5: which layers carry each variable causally, in how many dimensions, and how
   that differs from the construction (depth: layer 1, one dimension; top: layer 2, one block of
   bits per depth).

The construction is included twice: as the diagonal SSM (``construction``) and as HookedMamba
weights (``dyck_mamba``), where depth is one direction of a larger state. ``--das-full`` runs a longer
search (more pairs, steps, ranks up to the state width).

Writes ``report.json``, ``report.md`` and figures to ``--out`` (default ``outputs/dyck_probe``),
every file atomically. This module computes the records; the verdicts and ``report.md`` are
:mod:`analyses.dyck_report`'s, the figures :mod:`analyses.dyck_figures`'.
"""
from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

import languages
from analyses.common import Subject, das_settings, probe_collections, random_like
from analyses.dyck_figures import report_figures
from analyses.dyck_report import das_table, das_verdict, to_markdown, verdict
from analyses.dyck_trajectory import load_dyck_subjects, move_figures, trajectory_files_apart
from analyses.parallel import run_tasks
from analyses.study import (base_parser, card_summary, finish, parse_window, run_cli, settings_from_args,
                            start)
from languages import cli
from languages.io import atomic_write_text, check_writable
from probe.alignment import alignment_scores
from probe.collect import collect
from probe.conditional import ConditionalProbe
from probe.das_study import best_per_site, sweep_subject
from probe.grid import probe_grid
from probe.interchange import interchange_accuracy, sample_pairs
from probe.patching import dyck_patching
from trained_models.evaluate import evaluate_strings

DEFAULT_MODELS = ("dyck8-10-mamba-1l", "dyck8-10-mamba-2l", "dyck8-10-transformer-2l")
# IIA is scored with the task's own criterion (close accuracy at the counterfactual's non-empty-stack
# positions): it needs no set decoding, so sigmoid (allowed-set) and softmax (next-symbol) models
# are scored alike. See probe.interchange.interchange_accuracy.
IIA_SCORE = "close"
# Logistic probes at one penalty (C = 1 on standardised features, no inner CV): the CV over C cost
# five fits a probe and moved no held-out accuracy by more than the seed-to-seed spread
# (results/das_dyck.md); ridge probes keep their CV over alpha (cheap).
PROBE_PARAMS = {"Cs": (1.0,)}


@dataclass
class Settings:
    K: int = 8
    h: int = 10
    n: int = 24  # strings per evaluation set
    in_window: tuple[int, int] = (2, 300)
    out_window: tuple[int, int] = (701, 1400)
    probe_window: tuple[int, int] = (20, 300)
    # Probe and alignment budgets: results/das_dyck.md gives the seed-to-seed spread of the key numbers.
    probe_positions: int = 2500  # fewer leave deep stacks too rare for the per-depth top probes (construction 0.89)
    align_positions: int = 1500  # positions of the probe-test strings for the alignment with the construction
    test_positions: int = 600
    ood_positions: int = 600
    iia_pairs: int = 48
    iia_window: tuple[int, int] = (20, 120)
    patch_prefixes: int = 8  # prefixes per layer x position patching map
    seed: int = 0
    # The default DAS budget keeps make demo short: ranks 1 and 48 (depth needs one dimension in the
    # constructions, the per-depth memory up to 48), single layers; --das-full sweeps every rank and
    # the layers together.
    # Training pairs (plus das_pairs // 2 across lengths). 160, not 64: with 64, dyck_mamba's top-bracket search
    # at rank 48 found the memory on one seed of three (IIA 0.70 / 0.87 / 1.00); with 160, 0.91 / 1.00 / 1.00, at
    # about the same run time (the prefix runs and the scoring dominate, not the steps).
    das_pairs: int = 160
    das_test_pairs: int = 48
    das_steps: int = 20
    das_ranks: tuple[int, ...] = (1, 48)
    das_joint_layers: bool = False  # also search all layers at once
    das_ood_window: tuple[int, int] = (200, 400)
    das_restarts: int = 0
    das_lr: float = 0.005
    das_schedule: str = "constant"
    das_parts: tuple[str, ...] = ("ssm",)  # HookedMamba state parts searched (ssm, conv, both)
    # DAS on the trained models costs minutes a model on 2 cores (a few seconds on the constructions),
    # so the default run (make demo) searches the constructions only; --das-trained or --das-full adds
    # the trained models.
    das_trained: bool = False

    @classmethod
    def trained_das(cls, **kw: Any) -> dict[str, Any]:
        """The search behind ``--das-trained``: every model, more pairs and steps at a higher learning
        rate with a cosine decay, ranks 1..64, the layers together, and the Mamba state with and
        without its conv window."""
        base = dict(das_pairs=128, das_steps=60, das_lr=0.02, das_schedule="cosine", das_ranks=(1, 4, 16, 64),
                    das_trained=True, das_joint_layers=True, das_parts=("ssm", "both"))
        base.update(kw)
        return base

    @classmethod
    def full_das(cls, **kw: Any) -> dict[str, Any]:
        """The longer search behind ``--das-full``."""
        base = dict(das_pairs=384, das_steps=150, das_ranks=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024), das_lr=0.01,
                    das_schedule="cosine", das_restarts=1, das_test_pairs=96, das_trained=True, das_joint_layers=True,
                    das_parts=("ssm", "both"))
        base.update(kw)
        return base

    @classmethod
    def quick(cls, **kw: Any) -> "Settings":
        base = dict(n=16, probe_positions=1000, align_positions=1000, test_positions=400, ood_positions=400,
                    iia_pairs=32, out_window=(701, 900), das_pairs=64, das_test_pairs=32, das_steps=20,
                    das_ranks=(1, 8, 48))
        base.update(kw)
        return cls(**base)


# --------------------------------------------------------------------------- the four measurements


def task_accuracy(subject: Subject, language: Any, sets: dict[str, list[str]], n_bins: int = 3) -> dict[str, Any]:
    """Close and strict accuracy per set, and close accuracy per length bin (for the curves)."""
    bs, decode = subject.batch_size, subject.decode
    out: dict[str, Any] = {"curve": []}
    for key, strings in sets.items():
        lens = np.array([len(x) for x in strings])
        edges = np.unique(np.quantile(lens, np.linspace(0, 1, n_bins + 1)).astype(int))
        pooled_pos = pooled_ok = strict = 0.0
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            sel = [x for x in strings if lo <= len(x) <= hi and (i == len(edges) - 2 or len(x) < hi)]
            if not sel:
                continue
            r = evaluate_strings(subject.model, language, sel, decode=decode, batch_size=bs)
            pooled_pos += r["close_positions"]
            pooled_ok += r["close_accuracy"] * r["close_positions"]
            strict += r["strict_accuracy"] * r["n"]
            out["curve"].append((float(np.mean([len(x) for x in sel])), r["close_accuracy"]))
        out[key] = pooled_ok / max(pooled_pos, 1)
        out[f"{key}_strict"] = strict / len(strings)
    return out


def probe_records(subject: Subject, language: Any, st: Settings, strings: dict[str, list[str]]) -> list[dict]:
    sites = subject.sites()
    variables = ["depth", "top"]
    bs = subject.batch_size

    def coll(model: torch.nn.Module, key: str, positions: int, seed: int):
        return collect(model, language, strings[key], sites, variables, positions=positions, batch_size=bs,
                       seed=seed)

    tr, te, rand, baselines = probe_collections(subject, coll, "probe_train", "probe_test", st)
    ood = {"out": coll(subject.model, "out", st.ood_positions, st.seed + 2)}
    recs = probe_grid(tr, te, variables=variables, sites=sites, ood=ood, baselines=baselines, random_init=rand,
                      seed=st.seed, probe_params=dict(PROBE_PARAMS, alphas=(1.0, 10.0, 100.0), cv=2))
    # The top bracket read with one probe per depth (the construction's block selection), held out and longer.
    given = {site: top_given_depth(tr, (te, ood["out"]), site, st.seed) for site in sites}
    out = []
    for r in recs:
        out.append({
            "layer": r.layer, "site": r.site, "variable": r.variable, "accuracy": r.accuracy,
            "r2": r.r2, "selectivity": r.selectivity,
            "control": r.control, "majority": r.majority, "random_init": r.random_init,
            "input_token": r.input_token, "input_counts": r.input_counts, "ood_accuracy": r.ood["out"].accuracy,
            "accuracy_given_depth": given[r.site][0] if r.variable == "top" else None,
            "ood_accuracy_given_depth": given[r.site][1] if r.variable == "top" else None,
        })
    return out


def top_given_depth(tr: Any, tests: Sequence[Any], site: str, seed: int) -> tuple[float, ...]:
    """Accuracy on each of ``tests`` of the top bracket read with one logistic probe per depth
    (:class:`probe.conditional.ConditionalProbe`, as :func:`probe.grid.probe_given`), fitted once on ``tr``."""
    cp = ConditionalProbe(kind="classification", random_state=seed, probe_params=PROBE_PARAMS)
    cp.fit(tr.acts[site], tr.labels["top"], tr.labels["depth"], groups=tr.seq_id)
    scores = []
    for test in tests:
        codes = {v: test.codes_for(v, tr.classes.get(v, ())) for v in ("top", "depth")}  # in tr's classes
        scores.append(float(cp.score(test.acts[site], codes["top"], codes["depth"])))
    return tuple(scores)


def iia_records(subject: Subject, language: Any, st: Settings) -> list[dict]:
    pairs = sample_pairs(language, st.iia_pairs, *st.iia_window, seed=st.seed + 7, group=16,
                         equal_splits=subject.family == "transformer")
    out = []
    for layer in range(subject.n_layers):
        for variable in ("depth", "top"):
            r = interchange_accuracy(subject.model, language, pairs, [layer], variable, seed=st.seed,
                                     decode=subject.decode, score=IIA_SCORE)
            out.append({"layer": layer, "variable": variable, "iia": r.iia, "baseline": r.baseline,
                        "n_pairs": r.n_pairs, "n_excluded": r.n_excluded})
    r = interchange_accuracy(subject.model, language, pairs, "all", "all", seed=st.seed, decode=subject.decode,
                             score=IIA_SCORE)
    out.append({"layer": "all", "variable": "all", "iia": r.iia, "baseline": r.baseline, "n_pairs": r.n_pairs,
                "n_excluded": r.n_excluded})
    return out


def das_layer_sets(subject: Subject, variable: str, joint: bool = True) -> list[tuple[int, ...]]:
    """Where to search: every single layer for depth, the last layer for top, and with ``joint`` all
    layers together for both (recurrent models with two or more layers)."""
    n = subject.n_layers
    singles = [(l,) for l in range(n)] if variable == "depth" else [(n - 1,)]
    both = [tuple(range(n))] if joint and n > 1 and subject.family != "transformer" else []
    return singles + both


def das_records(subject: Subject, language: Any, st: Settings) -> list[dict]:
    """:func:`probe.das_study.sweep_subject` over :func:`das_layer_sets` (every rank; HookedMamba: each of
    ``st.das_parts``)."""
    variables = {v: das_layer_sets(subject, v, st.das_joint_layers) for v in ("depth", "top")}
    parts = st.das_parts if subject.family == "mamba" else ("ssm",)
    return sweep_subject(subject.model, language, variables, transformer=subject.family == "transformer",
                         window=tuple(st.iia_window), ood_window=tuple(st.das_ood_window), n_train=st.das_pairs,
                         n_test=st.das_test_pairs, sweep=das_settings(subject, st, IIA_SCORE),
                         random_model=random_like(subject), seed=st.seed, parts=parts)


def patching_record(subject: Subject, language: Any, st: Settings) -> dict:
    """Layer x position patching of the residual stream (recurrent models: also the state)."""
    out = {}
    sites = {"resid_pre": "blocks.{l}.hook_resid_pre"}
    if subject.family in ("mamba", "construction"):
        sites["state"] = subject.state_site(0).replace(".0.", ".{l}.")
    for key, site in sites.items():
        r = dyck_patching(subject.model, language, n=st.patch_prefixes, min_len=20, max_len=40, site=site,
                          seed=st.seed)
        out[key] = {"scores": r["scores"].tolist(), "site": site, "clean": r["clean"], "corrupted": r["corrupted"],
                    "length": r["length"], "n": r["n"]}
    return out


def alignment_records(subject: Subject, construction: Subject, language: Any, st: Settings,
                      strings: list[str], cache: Optional[dict] = None) -> list[dict]:
    """Linear-map R² both ways and CKA between each model layer's state and each construction
    layer's, on the same positions of ``strings``; ``cache`` keeps the construction's collection
    between calls (it is the same for every model)."""
    if subject is construction:
        return []
    c_sites = [construction.state_site(l) for l in range(construction.n_layers)]
    m_sites = [subject.state_site(l) for l in range(subject.n_layers)]
    bs = subject.batch_size
    # Same strings, same subsample seed -> the same positions in both collections.
    cache = {} if cache is None else cache
    if "construction" not in cache:
        cache["construction"] = collect(construction.model, language, strings, c_sites, [],
                                        positions=st.align_positions, seed=st.seed, batch_size=bs)
    cc = cache["construction"]
    mc = collect(subject.model, language, strings, m_sites, [], positions=st.align_positions, seed=st.seed,
                 batch_size=bs)
    if not (np.array_equal(cc.seq_id, mc.seq_id) and np.array_equal(cc.pos, mc.pos)):
        raise RuntimeError("construction and model collections are not aligned position by position")
    out = []
    for l, site in enumerate(m_sites):
        for cl, csite in enumerate(c_sites):
            s = alignment_scores(mc.acts[site].astype(np.float64), cc.acts[csite].astype(np.float64), mc.seq_id,
                                 seed=st.seed)
            out.append({"layer": l, "construction_layer": cl, "r2": s["r2_xy"], "r2_reverse": s["r2_yx"],
                        "cka": s["cka"]})
    return out


# --------------------------------------------------------------------------- the run


PARTS = ("accuracy", "probes", "iia", "alignment", "das", "patching")


def subject_parts(subj: Subject, construction: Subject, language: Any, st: Settings, strings: dict[str, list[str]],
                  parts: Sequence[str]) -> dict[str, Any]:
    """One model's section of the report: each of ``parts`` in :data:`PARTS` order, with the seconds
    each took (``das`` runs on the constructions, and on the trained models with ``st.das_trained``)."""
    m: dict[str, Any] = {"family": subj.family, "n_layers": subj.n_layers}
    align_cache: dict = {}
    for part in PARTS:
        if part not in parts or (part == "das" and not (st.das_trained or subj.card is None)):
            continue
        t_part = time.time()
        if part == "accuracy":
            acc = task_accuracy(subj, language, {"in": strings["in"], "out": strings["out"]})
            m["close_accuracy"] = {"in": acc["in"], "out": acc["out"]}
            m["strict_accuracy"] = {"in": acc["in_strict"], "out": acc["out_strict"]}
            m["length_curve"] = acc["curve"]
            if subj.card:
                m["card"] = card_summary(subj.card, ("train_command", "train_seconds", "metrics"))
        elif part == "probes":
            m["probes"] = probe_records(subj, language, st, strings)
        elif part == "iia":
            m["iia"] = iia_records(subj, language, st)
        elif part == "alignment":
            m["alignment"] = alignment_records(subj, construction, language, st, strings["probe_test"], align_cache)
            m["verdict"] = verdict(subj, m)
        elif part == "das":
            m["das_sweep"] = das_records(subj, language, st)
            m["das"] = best_per_site(m["das_sweep"])
            m["verdict_das"] = das_verdict(subj, m, st.K, st.h)
        else:
            m["patching"] = patching_record(subj, language, st)
        m.setdefault("seconds", {})[part] = round(time.time() - t_part, 1)  # where the run time goes
    return m


def run(names: Sequence[str], st: Settings, out: Path, formats: Sequence[str] = ("png",),
        progress: bool = True, figures: bool = True, parts: Sequence[str] = PARTS, jobs: int = 1) -> dict:
    """The study (``parts``: a subset of :data:`PARTS`, e.g. ``("accuracy", "das")`` for ``--das-only``);
    each model, and the trajectory figures, is one task of :func:`analyses.parallel.run_tasks` on
    ``jobs`` worker processes (the report is the same for any ``jobs`` but for its timings)."""
    t0 = start(out)  # --out checked before anything is computed
    language = languages.get("dyck", K=st.K, h=st.h)
    subjects, skipped = load_dyck_subjects(names, st.K, st.h, mamba_construction=True)
    strings = {
        "in": language.sample(st.n, *st.in_window, seed=st.seed + 11),
        "out": language.sample(st.n, *st.out_window, seed=st.seed + 12),
        "probe_train": language.sample(st.n, *st.probe_window, seed=st.seed + 13,
                                       exclude=None),
    }
    strings["probe_test"] = language.sample(st.n // 2, *st.probe_window, seed=st.seed + 14,
                                            exclude=set(strings["probe_train"]))
    report: dict[str, Any] = {"settings": st.__dict__, "skipped": skipped, "models": {}}
    construction = subjects[0]
    tasks = [(s.name, functools.partial(subject_parts, s, construction, language, st, strings, parts))
             for s in subjects]
    best = next((s.name for s in reversed(subjects) if s.family == "mamba" and s.n_layers >= 2 and s.card), None)
    trajectory = figures and best is not None
    if trajectory:
        name = next(n for n in names if Path(str(n)).name == best)
        draw = functools.partial(trajectory_files_apart, name, formats, K=st.K, h=st.h)
        tasks.append(("trajectory figures", draw))
    # Longest first: trained models by depth, then the figures, the constructions last.
    order = sorted(range(len(tasks)), key=lambda i: -_cost(subjects[i] if i < len(subjects) else None, st))
    done = run_tasks([tasks[i] for i in order], jobs=jobs, desc="dyck_probe", progress=progress)
    results = dict(zip(order, done))
    for i, s in enumerate(subjects):
        report["models"][s.name] = results[i]
    makers = []
    if figures:
        makers.append(lambda folder: report_figures(report, folder, formats))
    if trajectory:
        makers.append(lambda folder: move_figures(results[len(subjects)], folder))
    return finish(out, report, t0, to_markdown, makers)  # report and figures replace --out together


def _cost(subj: Optional[Subject], st: Settings) -> float:
    """A rough relative cost, to start the longest tasks first (None: the trajectory figures)."""
    if subj is None:
        return 2.5
    if subj.card is None:  # the constructions: cheap but for their DAS
        return 1.0 + 1.5 * (subj.family == "mamba")
    return subj.n_layers * 2.0 + (4.0 if st.das_trained else 0.0)


@cli.cli("python -m analyses.dyck_probe")
def main(argv: Optional[list[str]] = None) -> int:
    ap = base_parser("python -m analyses.dyck_probe", __doc__, "outputs/dyck_probe")
    ap.add_argument("--K", type=cli.positive_int, default=8)
    ap.add_argument("--h", type=cli.positive_int, default=10)
    ap.add_argument("--lengths", nargs=2, type=parse_window, metavar=("IN", "OUT"),
                    help="in- and out-of-distribution windows, e.g. 2:300 701:1400")
    ap.add_argument("--das-trained", action="store_true",
                    help="run the DAS search on the trained models too, with a longer search (more pairs and steps, "
                         "cosine learning rate, ranks 1..64, layers together, Mamba state with its conv window; minutes "
                         "a model; the default searches the constructions only)")
    ap.add_argument("--das-full", action="store_true",
                    help="longer DAS search on every model: more pairs and steps, ranks up to the width")
    ap.add_argument("--das-ranks", type=cli.positive_int, nargs="+", help="ranks searched (overrides the budget's)")
    ap.add_argument("--das-parts", nargs="+", choices=("ssm", "conv", "both"),
                    help="HookedMamba state parts searched (overrides the budget's)")
    ap.add_argument("--das-only", action="store_true", help="task accuracy and DAS only (no probes, whole-layer "
                    "swaps, alignment or patching), e.g. with --das-table")
    ap.add_argument("--das-table", type=Path, help="also write the DAS verdicts and IIA-vs-rank table to this file")
    args = ap.parse_args(argv)
    kw: dict[str, Any] = {"K": args.K, "h": args.h}
    if args.lengths:
        kw["in_window"], kw["out_window"] = args.lengths
    if args.das_trained:
        kw.update(Settings.trained_das())
    if args.das_full:
        kw.update(Settings.full_das())
    if args.das_ranks:
        kw["das_ranks"] = tuple(args.das_ranks)
    if args.das_parts:
        kw["das_parts"] = tuple(args.das_parts)
    parts = ("accuracy", "das") if args.das_only else PARTS
    if args.das_table:  # checked before the run, not after minutes of it
        if args.das_table.is_dir():
            raise cli.UsageError(f"--das-table {args.das_table} is a folder; name a file")
        check_writable(args.das_table.parent, "--das-table")

    def write_das_table(report: dict) -> None:
        if args.das_table:
            command = "python -m analyses.dyck_probe " + " ".join(argv if argv is not None else sys.argv[1:])
            atomic_write_text(args.das_table, das_table(report, command))
            print(f"Wrote {args.das_table}")

    return run_cli(args, settings_from_args(Settings, args, **kw), functools.partial(run, parts=parts),
                   DEFAULT_MODELS, to_markdown, after=write_das_table)

if __name__ == "__main__":
    raise SystemExit(main())
