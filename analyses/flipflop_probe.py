"""Flip-flop: where the stored bit lives, how reads fail with the distance since the last write,
and Mamba vs Transformer glitches.

::

    python -m analyses.flipflop_probe                     # shipped flip-flop models + the construction
    python -m analyses.flipflop_probe --quick
    python -m analyses.flipflop_probe --model runs/my-ffl-run --length 1024 --out outputs/x

Flip-flop language modelling (Liu et al. 2023): after ``r`` the next bit must repeat the bit
of the most recent ``w``. FFL(0.8) is dense (a write every ~10 instructions), FFL(0.98) sparse (every
~100), so sparse reads reach back much further. The paper gives an exact two-layer SSM
(previous-token channel, then a set/reset memory); it is the reference. For every model the report
gives

1. glitches: the fraction of sequences with any wrong read (and of reads) on FFL(0.8) at the
   training lengths, FFL(0.8) at ``--length`` (dense) and FFL(0.98) at ``--length`` (sparse), and
   the read error rate per read distance (instructions since the last write), binned;
2. per layer and site, logistic probes of the stored bit and of the last instruction, fit on FFL(0.8)
   at training lengths, scored on held-out strings and on the dense and sparse long sets, with
   selectivity and baselines; the best stored-bit probe's accuracy per distance since the write;
3. interchange intervention accuracy for the stored bit per layer
   (:class:`probe.causal_models.FlipFlopCausalModel`), with a random-pair baseline;
4. a one-line verdict per model and a Mamba vs Transformer comparison.

Writes ``report.json``, ``report.md`` and figures to ``--out`` (default ``outputs/flipflop_probe``),
every file atomically.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

import languages
from analyses.common import (DASBudget, Subject, best_row, construction_subject, das_figure, das_markdown, das_section,
                             das_sentence, language_is, load_subjects, probe_collections, probe_rows, sample_upto,
                             split_strings, train_window)
from analyses.figures import iia_heatmap, length_curves, probe_heatmap
from analyses.study import (base_parser, card_summary, end_markdown, finish, fmt, md_table, model_sections, run_cli,
                            save_and_close, settings_from_args, short_site, start)
from hooks.constructions import flipflop
from hooks.metrics import MetricAccumulator, read_outcomes
from languages import cli
from languages.datasets import encode_batch
from languages.vocab import Vocab
from probe.collect import collect
from probe.grid import probe_grid
from probe.interchange import interchange_accuracy, sample_pairs
from probe.linear import LinearProbe
from trained_models.evaluate import TorchBatch, iter_batches

DEFAULT_MODELS = ("flipflop-mamba-1l", "flipflop-transformer")
SETS = ("in", "dense", "sparse")
#: Distance bins (instructions since the last write; edges, the last open).
DISTANCE_EDGES = (0, 2, 5, 17, 65, 257)
PROBE_OK = 0.95
IIA_OK = 0.9


@dataclass
class Settings(DASBudget):
    n: int = 96  # strings per evaluation set
    length: int = 512  # length of the dense and sparse sets (Liu et al.: 512)
    p_dense: float = 0.8
    p_sparse: float = 0.98
    train_window: tuple = (64, 128)  # used when no trained model gives its own
    probe_train: int = 240
    probe_test: int = 80
    probe_positions: int = 4000
    test_positions: int = 1500
    ood_positions: int = 2000
    iia_pairs: int = 96
    iia_window: tuple = (20, 120)
    seed: int = 0

    @classmethod
    def quick(cls, **kw: Any) -> "Settings":
        base = dict(n=32, length=256, probe_train=100, probe_test=40, probe_positions=2000, test_positions=800,
                    ood_positions=1000, iia_pairs=48)
        base.update(DASBudget.QUICK)
        base.update(kw)
        return cls(**base)


def distance_bins() -> list[str]:
    e = DISTANCE_EDGES
    names = [f"{a}-{b - 1}" if b - 1 > a else f"{a}" for a, b in zip(e[:-1], e[1:])]
    return names + [f"{e[-1]}+"]


def distance_bin(d: int) -> int:
    return int(np.searchsorted(DISTANCE_EDGES, d, side="right") - 1)


def write_age(s: str, p: int) -> Optional[int]:
    """Instructions since the last completed write at model position ``p`` (which has read
    ``s[:p]``): 0 right after the write's bit, 1 at the next instruction, ...; None before any write
    completed. At a read (``s[p - 1] == 'r'``) it is the read distance."""
    j = s.rfind("w", 0, max(p - 1, 0))  # the write whose bit is among s[:p]
    if j < 0:
        return None
    return (p - 1) // 2 - j // 2


def load_all(names: Sequence[str]) -> tuple[list[Subject], list[str]]:
    subjects, skipped = load_subjects(names, language_is("flipflop"))
    return [construction_subject("construction", flipflop())] + subjects, skipped


# --------------------------------------------------------------------------- measurements


@torch.no_grad()
def read_analysis(subject: Subject, language: Any, strings: Sequence[str]) -> dict:
    """Glitch rate (sequences with any wrong read), read error rate (wrong reads / reads), strict
    accuracy, and reads / wrong reads per distance bin, as :mod:`hooks.metrics` defines and counts them."""
    vocab = Vocab(language.alphabet)
    acc = MetricAccumulator(language, vocab, subject.decode)
    n_bins = len(DISTANCE_EDGES)
    reads, wrong = np.zeros(n_bins, int), np.zeros(n_bins, int)
    model = subject.model
    was_training = model.training
    model.eval()
    try:
        for chunk in iter_batches(list(strings), subject.batch_size):
            tb = TorchBatch.from_batch(encode_batch(language, chunk, vocab, labels=False))
            out = model(tb.tokens)
            logits = out[0] if isinstance(out, tuple) else out
            acc.update(logits, tb)
            wrong_at = read_outcomes(logits, tb, acc.read_id, acc.bit_ids, subject.decode)[1].numpy()  # [B, L]
            for b, s in enumerate(tb.strings):
                last_w = None
                for i in range(0, len(s) - 1, 2):
                    if s[i] == "w":
                        last_w = i
                    elif s[i] == "r" and last_w is not None:
                        k = distance_bin((i - last_w) // 2)
                        reads[k] += 1
                        wrong[k] += int(wrong_at[b, i + 1])
    finally:
        model.train(was_training)
    r = acc.result()
    return {
        "glitch_rate": r["glitch_rate"], "read_error_rate": r["read_error_rate"],
        "strict_accuracy": r["strict_accuracy"], "reads": r["reads"], "wrong_reads": r["wrong_reads"],
        "by_distance": [{"distance": name, "reads": int(n), "wrong": int(w),
                         "error_rate": (float(w / n) if n else None)}
                        for name, n, w in zip(distance_bins(), reads, wrong)],
    }


def probe_records(subject: Subject, st: Settings, langs: dict[str, Any], strings: dict[str, list[str]]
                  ) -> list[dict]:
    sites = subject.sites()
    variables = ["stored", "instruction"]

    def coll(model: torch.nn.Module, key: str, positions: int, seed: int):
        lang = langs["sparse" if key == "sparse" else "dense"]
        return collect(model, lang, strings[key], sites, variables, positions=positions,
                       batch_size=subject.batch_size, seed=seed)

    tr, te, rand, baselines = probe_collections(subject, coll, "probe_train", "probe_test", st)
    ood = {k: coll(subject.model, k, st.ood_positions, st.seed + 2 + i) for i, k in enumerate(("dense", "sparse"))}
    params = {"Cs": (0.1, 1.0, 10.0), "cv": 2}
    recs = probe_grid(tr, te, variables=variables, sites=sites, ood=ood, baselines=baselines, random_init=rand,
                      seed=st.seed, probe_params=params, depth_var=None)
    rows = probe_rows(recs, list(ood))
    best = best_row(rows, "stored")
    if best is not None:  # the best stored-bit probe's accuracy against the distance since the write
        site = best["site"]
        probe = LinearProbe(kind="classification", Cs=(best["hyper"],) if best["hyper"] else params["Cs"],
                            cv=2).fit(tr.acts[site], tr.labels["stored"], groups=tr.seq_id)
        for key, c in [("in", te), *ood.items()]:
            ages = [write_age(c.strings[int(i)], int(p)) for i, p in zip(c.seq_id, c.pos)]
            which = np.array([-1 if a is None else distance_bin(a) for a in ages])
            ok = probe.predict(c.acts[site]) == c.codes_for("stored", tr.classes["stored"])
            curve = []
            for k, name in enumerate(distance_bins()):
                sel = which == k
                curve.append({"distance": name, "positions": int(sel.sum()),
                              "accuracy": float(ok[sel].mean()) if sel.any() else None})
            best.setdefault("by_distance", {})[key] = curve
    return rows


def iia_records(subject: Subject, language: Any, st: Settings) -> list[dict]:
    pairs = sample_pairs(language, st.iia_pairs, *st.iia_window, seed=st.seed + 7, group=16,
                         equal_splits=subject.family == "transformer")
    out = []
    for layers in [[l] for l in range(subject.n_layers)] + ["all"]:
        variable = "all" if layers == "all" else "stored"
        r = interchange_accuracy(subject.model, language, pairs, layers, variable, seed=st.seed,
                                 decode=subject.decode)
        out.append({"layer": "all" if layers == "all" else layers[0], "variable": variable, "iia": r.iia,
                    "baseline": r.baseline, "n_pairs": r.n_pairs, "n_excluded": r.n_excluded})
    return out


def verdict(subject: Subject, m: dict) -> str:
    g = m["reads"]
    glitch = " / ".join(fmt(g[k]["glitch_rate"]) for k in SETS)
    worst = [(b["distance"], b["error_rate"]) for b in g["sparse"]["by_distance"] if b["error_rate"]]
    where = (f"; sparse read errors from distance {worst[0][0]} (rates "
             + ", ".join(f"{d}: {fmt(e)}" for d, e in worst) + ")") if worst else ""
    best = best_row(m["probes"], "stored")
    pr = ""
    if best is not None:
        pr = (f"; stored bit from layer {best['layer'] + 1} {short_site(best['site'])}: probe {fmt(best['accuracy'])} "
              f"in, {fmt(best['ood'].get('dense'))} dense, {fmt(best['ood'].get('sparse'))} sparse")
        if best.get("random_init") is not None and best["random_init"] >= best["accuracy"] - 0.02:
            pr += f" (random init {fmt(best['random_init'])}: not selective)"
    iia = [r for r in m.get("iia", []) if r["variable"] == "stored"]
    top = max(iia, key=lambda r: r["iia"]) if iia else None
    ii = f"; swapping layer {top['layer'] + 1} moves reads as the stored bit says (IIA {fmt(top['iia'])}, " \
         f"baseline {fmt(top['baseline'])})" if top and top["iia"] >= IIA_OK else (
        f"; no single layer's swap carries the stored bit (best IIA {fmt(top['iia'])}, layer {top['layer'] + 1})"
        if top else "")
    head = "No glitches" if all(g[k]["glitch_rate"] == 0 for k in SETS) else "Glitches"
    return f"{head} (sequences with a wrong read, in / dense / sparse: {glitch}){where}{pr}{ii}."


def comparison(report: dict) -> Optional[str]:
    fam = {}
    for name, m in report["models"].items():
        if m["family"] in ("mamba", "transformer"):
            fam.setdefault(m["family"], []).append((name, m["reads"]["sparse"]["glitch_rate"],
                                                    m["reads"]["dense"]["glitch_rate"]))
    if not fam:
        return None
    parts = [f"{n} {fmt(d)} dense / {fmt(s)} sparse" for f in ("mamba", "transformer") for n, s, d in fam.get(f, [])]
    missing = [f for f in ("mamba", "transformer") if f not in fam]
    text = "Glitch rate (sequences with a wrong read): " + "; ".join(parts)
    if missing:
        text += f" (no {' or '.join(missing)} model to compare with)"
    elif min(s for _, s, _ in fam["mamba"]) < min(s for _, s, _ in fam["transformer"]):
        text += " -- the Mamba glitches less on sparse sequences, as Liu et al. and the paper report"
    else:
        text += " -- the Transformer does not glitch more than the Mamba here"
    return text + "."


# --------------------------------------------------------------------------- figures


def _mid(name: str) -> float:
    """A distance bin's x position on a log axis (>= 1)."""
    if name.endswith("+"):
        return float(name[:-1]) * 2
    lo, _, hi = name.partition("-")
    return max(1.0, (float(lo) + float(hi or lo)) / 2)


def report_figures(report: dict, out: Path, formats: Sequence[str]) -> list[Path]:
    def by_distance_figure(curves: dict, ylabel: str, title: str, path: Path) -> list[Path]:
        """One line per curve against the instructions since the last write (log x); none if empty."""
        if not curves:
            return []
        fig = length_curves(curves, ylabel=ylabel, title=title)
        fig.axes[0].set_xscale("log")
        fig.axes[0].set_xlabel("instructions since the last write")
        return save_and_close(fig, path, formats)

    paths = []
    curves = {}
    for name, m in report["models"].items():
        for k in ("dense", "sparse"):
            pts = [(_mid(b["distance"]), b["error_rate"]) for b in m["reads"][k]["by_distance"]
                   if b["error_rate"] is not None]
            if pts:
                curves[f"{name} ({k})"] = pts
    paths += by_distance_figure(curves, "read error rate", "Wrong reads against read distance",
                                out / "read_errors_by_distance")
    curves = {}
    for name, m in report["models"].items():
        best = best_row(m["probes"], "stored")
        for k, pts in (best or {}).get("by_distance", {}).items():
            pts = [(_mid(b["distance"]), b["accuracy"]) for b in pts if b["accuracy"] is not None]
            if pts and k != "in":
                curves[f"{name} ({k})"] = pts
    paths += by_distance_figure(curves, "stored-bit probe accuracy", "Stored bit against its age",
                                out / "stored_probe_by_distance")
    for name, m in report["models"].items():
        recs = [dict(r, score=r["accuracy"]) for r in m["probes"] if r["accuracy"] is not None]
        if recs:
            paths += save_and_close(probe_heatmap(recs, title=f"{name}: probe accuracy (held out)"),
                                 out / f"probes_{name}", formats)
    rows, labels = [], []
    for name, m in report["models"].items():
        for r in m.get("iia", []):
            layer = "all" if r["layer"] == "all" else f"L{r['layer'] + 1}"
            labels.append(f"{name} {layer} {r['variable']}")
            rows.append([r["iia"], r["baseline"]])
    if rows:
        fig = iia_heatmap(np.array(rows), labels, [0, 1], title="IIA (left) vs random-pair baseline (right)")
        fig.axes[0].set_xticks([0, 1], ["IIA", "baseline"], rotation=0)
        fig.axes[0].set_xlabel("")
        paths += save_and_close(fig, out / "iia", formats)
    paths += das_figure(report, out, formats)
    return paths


# --------------------------------------------------------------------------- the run


def run(names: Sequence[str], st: Settings, out: Path, formats: Sequence[str] = ("png",),
        progress: bool = True, figures: bool = True, jobs: int = 1) -> dict:
    t0 = start(out)  # --out checked before anything is computed
    subjects, skipped = load_all(names)
    langs = {"dense": languages.get("flipflop", p=st.p_dense), "sparse": languages.get("flipflop", p=st.p_sparse)}
    trained = next((s for s in subjects if s.card), None)
    window = train_window(trained, langs["dense"], tuple(st.train_window))
    strings = {
        "in": sample_upto(langs["dense"], st.n, window, st.seed + 11),
        "dense": sample_upto(langs["dense"], st.n, (st.length, st.length), st.seed + 12),
        "sparse": sample_upto(langs["sparse"], st.n, (st.length, st.length), st.seed + 13),
    }
    strings["probe_train"], strings["probe_test"] = split_strings(langs["dense"], st.probe_train, st.probe_test,
                                                                  window, st.seed + 14)
    report: dict[str, Any] = {"study": "flipflop_probe", "settings": asdict(st), "train_window": list(window),
                              "skipped": skipped, "models": {}}
    def section(subj: Subject) -> dict:
        m: dict[str, Any] = {"family": subj.family, "n_layers": subj.n_layers}
        m["reads"] = {k: read_analysis(subj, langs["sparse" if k == "sparse" else "dense"], strings[k]) for k in SETS}
        if subj.card:
            m["card"] = card_summary(subj.card)
        m["probes"] = probe_records(subj, st, langs, strings)
        m["iia"] = iia_records(subj, langs["dense"], st)
        m["verdict"] = verdict(subj, m)
        m["das_sweep"], m["das"] = das_section(subj, langs["dense"], {"stored": [(l,) for l in range(subj.n_layers)]},
                                               st, st.iia_window, (200, 400))
        m["verdict"] += f" DAS: {das_sentence(m['das'], 'stored')}."
        return m

    report["models"] = model_sections(subjects, section, jobs, "flipflop_probe", progress)
    report["comparison"] = comparison(report)
    makers = [lambda folder: report_figures(report, folder, formats)] if figures else []
    return finish(out, report, t0, to_markdown, makers)  # report and figures replace --out together


def to_markdown(report: dict) -> str:
    st = report["settings"]
    w = report["train_window"]
    lines = ["# Flip-flop probe report", "",
             f"Sets: in = FFL({st['p_dense']}) at the training lengths {w[0]}–{w[1]}; dense = FFL({st['p_dense']}) "
             f"and sparse = FFL({st['p_sparse']}) at length {st['length']}; {st['n']} strings each; seed {st['seed']}. "
             f"Run time {report['seconds']} s, peak RSS {report['peak_rss_mb']} MB.", "", "## Verdicts", ""]
    lines += [f"- **{name}**: {m['verdict']}" for name, m in report["models"].items() if "verdict" in m]
    if report.get("comparison"):
        lines += ["", report["comparison"]]
    lines += ["", "## Glitches (fraction of sequences with any wrong read; wrong reads / reads)", ""]
    lines += md_table(["model"] + [f"{k}" for k in SETS] + [f"{k} reads" for k in SETS],
                      [[name] + [m["reads"][k]["glitch_rate"] for k in SETS]
                       + [f"{m['reads'][k]['wrong_reads']} / {m['reads'][k]['reads']}" for k in SETS]
                       for name, m in report["models"].items()], digits=3)
    lines += ["", "## Read error rate by read distance (instructions since the last write; reads in brackets)", ""]
    rows = []
    for name, m in report["models"].items():
        for k in ("dense", "sparse"):
            rows.append([f"{name} ({k})"] + [f"{fmt(b['error_rate'], 3)} ({b['reads']})" if b["reads"] else None
                                             for b in m["reads"][k]["by_distance"]])
    lines += md_table(["model (set)"] + distance_bins(), rows)
    lines += ["", "## Probes (held-out accuracy; fit on FFL(0.8) at the training lengths)", ""]
    rows = []
    for name, m in report["models"].items():
        for p in m["probes"]:
            rows.append([name, p["layer"] + 1, short_site(p["site"]), p["variable"], p["accuracy"],
                         p["ood"].get("dense"), p["ood"].get("sparse"), p["selectivity"], p["control"], p["majority"],
                         p["random_init"], p["input_token"], p["input_counts"]])
    lines += md_table(["model", "layer", "site", "variable", "in", "dense", "sparse", "selectivity", "control",
                       "majority", "random init", "tokens", "counts"], rows)
    lines += ["", "Best stored-bit probe by the age of the stored bit (instructions since the write):", ""]
    rows = []
    for name, m in report["models"].items():
        best = best_row(m["probes"], "stored")
        for k, pts in (best or {}).get("by_distance", {}).items():
            rows.append([f"{name} ({k}, L{best['layer'] + 1} {short_site(best['site'])})"]
                        + [f"{fmt(b['accuracy'])} ({b['positions']})" if b["positions"] else None for b in pts])
    lines += md_table(["model (set, site)"] + distance_bins(), rows)
    lines += das_markdown(report["models"])
    lines += ["", "## Interchange interventions (stored bit; 'all' swaps every layer)", ""]
    rows = []
    for name, m in report["models"].items():
        for r in m.get("iia", []):
            rows.append([name, r["layer"] if r["layer"] == "all" else r["layer"] + 1, r["variable"], r["iia"],
                         r["baseline"], f"{r['n_pairs']} ({r['n_excluded']})"])
    lines += md_table(["model", "layer swapped", "variable", "IIA", "random-pair baseline", "pairs (excluded)"], rows)
    return end_markdown(report, lines)


@cli.cli("python -m analyses.flipflop_probe")
def main(argv: Optional[list[str]] = None) -> int:
    ap = base_parser("python -m analyses.flipflop_probe", __doc__, "outputs/flipflop_probe")
    ap.add_argument("--length", type=cli.positive_int, help="length of the dense and sparse sets (default 512; even)")
    args = ap.parse_args(argv)
    if args.length is not None and (args.length < 2 or args.length % 2):
        ap.error("--length must be an even number >= 2")
    st = settings_from_args(Settings, args, **({"length": args.length} if args.length else {}))
    return run_cli(args, st, run, DEFAULT_MODELS, to_markdown)


if __name__ == "__main__":
    raise SystemExit(main())
