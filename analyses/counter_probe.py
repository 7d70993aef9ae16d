"""Counters as regression targets: where linear read-outs stop extrapolating, and whether the model's
length generalization fails at the same lengths.

::

    python -m analyses.counter_probe                    # shipped Dyck-1 and a^n b^n models + constructions
    python -m analyses.counter_probe --quick
    python -m analyses.counter_probe --language anbn --model runs/my-anbn-run --out outputs/x

Dyck-1's depth (#( - #), the trace's ``depth``, equal to its ``counter[0]``) and a^n b^n's
``counter[0]`` (#a - #b) grow with the length, so the paper's counter constructions (c_t = c_{t-1} + [a] - [b], gate 1)
hold them exactly in one gate-1 coordinate. For every model (the construction of its language first,
as the reference) the report gives

1. strict accuracy per length bin: two bins inside the training lengths (held-out strings) and four
   beyond them, up to three times the longest training string;
2. per layer and site, a ridge probe of the counter fit on training lengths only, with selectivity
   and baselines (majority, control task, random init, current token, prefix symbol counts), and its
   extrapolation per length bin: R^2 and the accuracy of the rounded read-out, and the accuracy on
   positions whose counter value exceeds every training value;
3. where each breaks -- the first length bin where the best probe's rounded accuracy, or the
   model's strict accuracy, drops below 0.9 -- and a one-line verdict comparing the two;
4. distributed alignment search (:mod:`probe.das`) for the counter value per layer: a learned
   rank-k subspace whose swap moves the model as the counter automaton's counterfactual says (the
   base's phase, the source's counter; :class:`probe.causal_models.CounterCausalModel`), with its
   controls (``models[name]["das"]``, ``das_sweep``).

Writes ``report.json``, ``report.md`` and figures to ``--out`` (default ``outputs/counter_probe``),
every file atomically.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

import languages
from analyses.common import (Subject, best_row, bin_name, construction_subject, das_figure, das_markdown,
                             das_section, das_sentence, edges_to_bins, first_below, language_is, load_subjects,
                             probe_collections, probe_rows, sample_upto, split_strings, strict_by_bin, train_window)
from analyses.figures import length_curves, probe_heatmap, state_trajectory
from analyses.study import (base_parser, card_summary, end_markdown, finish, fmt, md_table, model_sections, run_cli,
                            save_and_close, settings_from_args, short_site, start)
from hooks.constructions import counter
from languages import cli
from probe.collect import collect
from probe.grid import length_bins as split_by_length
from probe.grid import probe_grid
from probe.linear import LinearProbe

LANGUAGES = ("dyck1", "anbn")
DEFAULT_MODELS = ("dyck1-mamba", "dyck1-transformer", "anbn-mamba", "anbn-transformer")
VARIABLE = {"dyck1": "depth", "anbn": "counter[0]"}  # the probe target per language
TRACE_VARIABLE = {"dyck1": "depth", "anbn": "counter"}  # what collect reads from the trace
# The causal variable DAS looks for (probe.causal_models.CounterCausalModel): the counter value; its
# counterfactual comes from the counter automaton (the base's phase, the source's counter).
DAS_VARIABLE = {"dyck1": "depth", "anbn": "counter"}
BREAK = 0.9  # "works" at or above this accuracy
# Ridge penalties tried by CV. Not below 1: on Mamba states with near-constant coordinates (std ~1e-3,
# standardised up) the float32 Gram of probe.linear makes alpha = 0.01 numerically unstable (its
# training R^2 falls below alpha = 1's).
ALPHAS = (1.0, 10.0, 100.0, 1000.0)


@dataclass
class Settings:
    n: int = 40  # strings per length bin (strict accuracy)
    languages: tuple = LANGUAGES
    probe_train: int = 300  # strings from the training lengths for the probe fit
    probe_test: int = 100  # held-out strings from the training lengths
    probe_positions: int = 3000
    test_positions: int = 1500
    ood_positions: int = 500  # per length bin beyond the training lengths
    seed: int = 0
    # DAS on the counter: training pairs from the training lengths (plus das_pairs // 2 whose sources
    # are up to twice as long), held-out pairs from the training lengths and from beyond them.
    das_pairs: int = 96
    das_test_pairs: int = 48
    das_steps: int = 30
    das_ranks: tuple = (1, 4, 16)
    das_restarts: int = 0
    # Continuation positions the search trains on: a^n b^n's counter shows only once the b's come,
    # so a few positions after the split say nothing about it.
    das_horizon: int = 48
    # The search on a trained model costs about a minute a model on 2 idle cores (the constructions a
    # few seconds), so the default run searches the constructions; --das-trained adds the trained models.
    das_trained: bool = False

    @classmethod
    def quick(cls, **kw: Any) -> "Settings":
        base = dict(n=16, probe_train=120, probe_test=40, probe_positions=1500, test_positions=600,
                    ood_positions=300, das_pairs=64, das_test_pairs=32, das_steps=15)
        base.update(kw)
        return cls(**base)


def length_bins(window: tuple[int, int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Two bins splitting the training window and four of half its width beyond it (up to 3x)."""
    lo, hi = window
    w = max(1, hi // 2)
    edges = [lo, hi - w + 1, hi + 1] + [hi + 1 + k * w for k in range(1, 5)]
    edges = sorted(set(edges))
    bins = edges_to_bins(edges)
    return [b for b in bins if b[1] <= hi], [b for b in bins if b[0] > hi]


def load_all(names: Sequence[str], langs: Sequence[str]) -> tuple[list[Subject], list[str]]:
    subjects, skipped = load_subjects(names, language_is(*LANGUAGES))
    kept = [s for s in subjects if s.language.name in langs]
    skipped += [f"{s.name}: trained on {s.language.name}, not among --language {list(langs)}"
                for s in subjects if s.language.name not in langs]
    cons = [construction_subject(f"construction-{lang}", counter(lang)) for lang in langs]
    return cons + kept, skipped


# --------------------------------------------------------------------------- measurements


def accuracy_by_bin(subject: Subject, language: Any, strings: dict[str, list[str]]) -> dict:
    res = strict_by_bin(subject, language, strings)
    return {"strict_accuracy": {b: r["strict_accuracy"] for b, r in res.items()},
            "position_accuracy": {b: r["position_accuracy"] for b, r in res.items()},
            "n_strings": {b: r["n"] for b, r in res.items()}}


def probe_records(subject: Subject, language: Any, st: Settings, strings: dict[str, list[str]],
                  in_bins: list[str], out_bins: list[str], trajectory: str) -> tuple[list[dict], dict]:
    """Probe rows (every site) and the best site's read-out along the ``trajectory`` string."""
    var = VARIABLE[language.name]
    sites = subject.sites()

    def coll(model: torch.nn.Module, strs: list[str], positions: int, seed: int):
        return collect(model, language, strs, sites, [TRACE_VARIABLE[language.name]], positions=positions,
                       batch_size=subject.batch_size, seed=seed)

    tr, te, rand, baselines = probe_collections(subject, coll, strings["probe_train"], strings["probe_test"], st)
    ood = {}
    for name in in_bins:  # the held-out test positions, split by length
        lo, hi = (int(x) for x in name.split("-"))
        ood.update(split_by_length(te, [lo, hi + 1]))
    for i, b in enumerate(out_bins):
        ood[b] = coll(subject.model, strings[b], st.ood_positions, st.seed + 5 + i)
    recs = probe_grid(tr, te, variables=[var], sites=sites, ood=ood, baselines=baselines, random_init=rand,
                      seed=st.seed, probe_params={"alphas": ALPHAS, "cv": 2}, depth_var=None)
    rows = probe_rows(recs, list(ood))
    best = best_row(rows, var, key="r2")
    traj: dict[str, Any] = {}
    if best is not None:
        # The best site's probe again: its read-out along one long string (trajectory figure), and its
        # rounded accuracy on the OOD positions whose value exceeds every training value.
        site = best["site"]
        probe = LinearProbe(kind="regression", alphas=(best["hyper"],)).fit(tr.acts[site], tr.labels[var],
                                                                                  groups=tr.seq_id)
        top = float(np.nanmax(tr.labels[var]))
        beyond = {}
        for b in out_bins:
            y = ood[b].labels[var]
            rows_b = np.flatnonzero(y > top)
            if len(rows_b):
                pred = probe.predict(ood[b].acts[site][rows_b])
                beyond[b] = {"n": int(len(rows_b)), "accuracy": float(np.mean(np.rint(pred) == y[rows_b])),
                             "mean_abs_error": float(np.mean(np.abs(pred - y[rows_b])))}
        best["beyond_train_max"] = beyond
        one = collect(subject.model, language, [trajectory], [site], [])
        traj = {"site": site, "train_max": top,
                "readout": [round(float(v), 3) for v in probe.predict(one.acts[site])]}
    return rows, traj


def breaks(m: dict, var: str, bins: list[str]) -> dict:
    """The best site (highest R^2 in distribution) and the first bin where each measure drops below
    :data:`BREAK`."""
    best = best_row(m["probes"], var, key="r2")
    out: dict[str, Any] = {"threshold": BREAK, "site": None, "probe_accuracy": None, "probe_r2": None,
                           "model_strict": first_below([(b, m["strict_accuracy"].get(b)) for b in bins], BREAK)}
    if best is not None:
        out["site"], out["layer"] = best["site"], best["layer"]
        out["probe_accuracy"] = first_below([(b, best["ood"].get(b)) for b in bins], BREAK)
        out["probe_r2"] = first_below([(b, best["ood_r2"].get(b)) for b in bins], BREAK)
    return out


def verdict(subject: Subject, m: dict, var: str, in_bins: list[str], out_bins: list[str]) -> str:
    b = m["breaks"]
    best = best_row(m["probes"], var, key="r2")
    if best is None:
        return "No probe results."
    where = f"layer {best['layer'] + 1} {short_site(best['site'])}"
    last = out_bins[-1] if out_bins else in_bins[-1]

    def at(label: Optional[str]) -> str:
        return f"lengths {label}" if label else f"no bin up to {last}"

    pb, mb = b["probe_accuracy"], b["model_strict"]
    order = [*in_bins, *out_bins]
    rank = {x: i for i, x in enumerate(order)}
    if pb is None and mb is None:
        rel = "both hold at every tested length"
    elif pb is None:
        rel = "the counter stays linearly readable beyond where the model fails: the failure is in using it"
    elif mb is None:
        rel = "the model holds while the linear read-out drifts: the counter is stored non-linearly or rescaled"
    elif rank[pb] == rank[mb]:
        rel = "both break in the same bin: the length-generalization failure lines up with the counter's"
    elif rank[pb] < rank[mb]:
        rel = "the read-out breaks first"
    else:
        rel = "the model breaks first, the counter survives longer"
    caveat = ""
    if best.get("random_init") is not None and best["random_init"] >= best["r2"] - 0.01:
        caveat = (f" (a random-init model's state gives R² {fmt(best['random_init'], 3)} too: a near-1 gate "
                  "integrates token counts, so in-distribution R² alone shows no learned structure)")
    return (f"{var} from {where}: R² {fmt(best['r2'], 3)}, rounded accuracy {fmt(best['accuracy'])} in "
            f"distribution{caveat}; the read-out's rounded accuracy first drops below {BREAK} at {at(pb)} (R² at "
            f"{at(b['probe_r2'])}), the model's strict accuracy at {at(mb)}; {rel}.")


# --------------------------------------------------------------------------- figures


def report_figures(report: dict, out: Path, formats: Sequence[str]) -> list[Path]:
    paths = []
    for lang, info in report["languages"].items():
        members = {n: m for n, m in report["models"].items() if m["language"] == lang}
        curves = {}
        bins = info["in_bins"] + info["out_bins"]
        mid = {b: (int(b.split("-")[0]) + int(b.split("-")[1])) / 2 for b in bins}
        for name, m in members.items():
            curves[f"{name}: strict"] = [(mid[b], m["strict_accuracy"][b]) for b in bins if b in m["strict_accuracy"]]
            site = m["breaks"].get("site")
            row = next((r for r in m["probes"] if r["site"] == site), None)
            if row is not None:
                curves[f"{name}: probe"] = [(mid[b], row["ood"][b]) for b in bins if row["ood"].get(b) is not None]
        fig = length_curves(curves, train_max=info["train_window"][1], ylabel="accuracy",
                            title=f"{lang}: strict accuracy and rounded {info['variable']} read-out")
        paths += save_and_close(fig, out / f"length_generalization_{lang}", formats)
        traj = info.get("trajectory")
        readouts = {f"{n} ({short_site(m['trajectory']['site'])})": m["trajectory"]["readout"]
                    for n, m in members.items() if m.get("trajectory")}
        if traj and readouts:
            fig = state_trajectory(traj["string"], traj["value"], readouts,
                                   title=f"{lang}: {info['variable']} along one string of length "
                                         f"{len(traj['string'])} (trained up to {info['train_window'][1]})")
            fig.axes[0].set_ylabel(info["variable"])
            paths += save_and_close(fig, out / f"trajectory_{lang}", formats)
        for name, m in members.items():
            recs = [dict(r, score=max(r["r2"], 0.0), variable=f"{r['variable']} R² (in)") for r in m["probes"]]
            recs += [dict(r, score=r["accuracy"], variable=f"{r['variable']} rounded (in)") for r in m["probes"]]
            if recs:
                paths += save_and_close(probe_heatmap(recs, title=f"{name}: counter probe"), out / f"probes_{name}",
                                     formats)
    paths += das_figure(report, out, formats)
    return paths


# --------------------------------------------------------------------------- the run


def run(names: Sequence[str], st: Settings, out: Path, formats: Sequence[str] = ("png",),
        progress: bool = True, figures: bool = True, jobs: int = 1) -> dict:
    t0 = start(out)  # --out checked before anything is computed
    subjects, skipped = load_all(names, st.languages)
    report: dict[str, Any] = {"study": "counter_probe", "settings": asdict(st), "skipped": skipped,
                              "languages": {}, "models": {}}
    data: dict[str, dict] = {}
    for k, lang_name in enumerate(st.languages):
        language = languages.get(lang_name)
        trained = next((s for s in subjects if s.card and s.language.name == lang_name), None)
        window = train_window(trained, language)
        in_w, out_w = length_bins(window)
        in_bins, out_bins = [bin_name(w) for w in in_w], [bin_name(w) for w in out_w]
        strings = {bin_name(w): sample_upto(language, st.n, w, st.seed + 100 * k + i)
                   for i, w in enumerate(in_w + out_w)}
        strings["probe_train"], strings["probe_test"] = split_strings(language, st.probe_train, st.probe_test,
                                                                      window, st.seed + 100 * k + 50)
        long = max((x for x in strings[out_bins[-1]]), key=len) if strings.get(out_bins[-1]) else ""
        value = [v if not isinstance(v, tuple) else v[0]
                 for v in language.trace(long, initial=True)[TRACE_VARIABLE[lang_name]]]
        data[lang_name] = {"language": language, "strings": strings, "in_bins": in_bins, "out_bins": out_bins,
                           "trajectory": long}
        report["languages"][lang_name] = {"variable": VARIABLE[lang_name], "train_window": list(window),
                                          "in_bins": in_bins, "out_bins": out_bins,
                                          "trajectory": {"string": long, "value": value}}
    def section(subj: Subject) -> dict:
        d = data[subj.language.name]
        m: dict[str, Any] = {"language": subj.language.name, "family": subj.family, "n_layers": subj.n_layers}
        m.update(accuracy_by_bin(subj, d["language"], {b: d["strings"][b] for b in d["in_bins"] + d["out_bins"]}))
        if subj.card:
            m["card"] = card_summary(subj.card)
        m["probes"], m["trajectory"] = probe_records(subj, d["language"], st, d["strings"], d["in_bins"],
                                                     d["out_bins"], d["trajectory"])
        var = VARIABLE[subj.language.name]
        m["breaks"] = breaks(m, var, d["in_bins"] + d["out_bins"])
        m["verdict"] = verdict(subj, m, var, d["in_bins"], d["out_bins"])
        if st.das_trained or subj.card is None:
            var = DAS_VARIABLE[subj.language.name]
            window = report["languages"][subj.language.name]["train_window"]
            m["das_sweep"], m["das"] = das_section(subj, d["language"], {var: [(l,) for l in range(subj.n_layers)]},
                                                   st, window, (window[1] + 1, 2 * window[1]))
            m["verdict"] += f" DAS: {das_sentence(m['das'], var)}."
        return m

    report["models"] = model_sections(subjects, section, jobs, "counter_probe", progress)
    makers = [lambda folder: report_figures(report, folder, formats)] if figures else []
    return finish(out, report, t0, to_markdown, makers)  # report and figures replace --out together


def to_markdown(report: dict) -> str:
    st = report["settings"]
    lines = ["# Counters: probe extrapolation vs length generalization", "",
             f"{st['n']} strings per length bin; probes fit on {st['probe_train']} strings of the training lengths; "
             f"seed {st['seed']}. Run time {report['seconds']} s, peak RSS {report['peak_rss_mb']} MB.", "",
             "## Verdicts", ""]
    lines += [f"- **{name}**: {m['verdict']}" for name, m in report["models"].items() if "verdict" in m]
    for lang, info in report["languages"].items():
        members = {n: m for n, m in report["models"].items() if m["language"] == lang}
        bins = info["in_bins"] + info["out_bins"]
        var = info["variable"]
        lines += ["", f"## {lang}: {var} (trained on lengths {info['train_window'][0]}–{info['train_window'][1]})", "",
                  "Per length bin: the model's strict accuracy, and the best site's probe (fit on training "
                  "lengths): rounded accuracy / R². Bins marked * lie beyond the training lengths.", ""]
        header = ["lengths"]
        for name in members:
            header += [f"{name} strict", f"{name} probe acc / R²"]
        rows = []
        for b in bins:
            row: list[Any] = [b + ("*" if b in info["out_bins"] else "")]
            for name, m in members.items():
                site = m["breaks"].get("site")
                p = next((r for r in m["probes"] if r["site"] == site), None)
                row.append(m["strict_accuracy"].get(b))
                row.append(f"{fmt(p['ood'].get(b))} / {fmt(p['ood_r2'].get(b))}" if p else None)
            rows.append(row)
        lines += md_table(header, rows)
        lines += ["", f"Values beyond training: the best site's rounded accuracy on out-of-distribution positions "
                  f"whose {var} exceeds every training value (positions):", ""]
        rows = []
        for name, m in members.items():
            p = best_row(m["probes"], var, key="r2")
            beyond = (p or {}).get("beyond_train_max", {})
            rows.append([name] + [f"{fmt(beyond[b]['accuracy'])} ({beyond[b]['n']})" if b in beyond else None
                                  for b in info["out_bins"]])
        lines += md_table(["model"] + info["out_bins"], rows)
        lines += ["", f"Probes of {var} per layer and site (held out, training lengths):", ""]
        rows = []
        for name, m in members.items():
            for p in m["probes"]:
                rows.append([name, p["layer"] + 1, short_site(p["site"]), p["r2"], p["accuracy"], p["selectivity"],
                             p["control"], p["majority"], p["random_init"], p["input_token"], p["input_counts"]])
        lines += md_table(["model", "layer", "site", "R²", "rounded acc", "selectivity (R²)", "control", "majority",
                           "random init", "tokens", "counts"], rows)
        lines += ["", "Baselines are R² of the same ridge probe: control = Hewitt & Liang control task (with a "
                  "handful of token types it is learnable wherever the site carries the current token), counts = "
                  "the prefix symbol counts (the counter is linear in them: R² 1 by design)."]
    lines += das_markdown(report["models"])
    lines += ["", "DAS variable: the counter value (Dyck-1: depth; a^n b^n: #a - #b), whose counterfactual comes from "
              "the counter automaton (probe.causal_models.CounterCausalModel): the base's phase with the source's "
              "counter, scored on the base's continuation until it turns illegal."]
    return end_markdown(report, lines)


@cli.cli("python -m analyses.counter_probe")
def main(argv: Optional[list[str]] = None) -> int:
    ap = base_parser("python -m analyses.counter_probe", __doc__, "outputs/counter_probe")
    ap.add_argument("--language", action="append", choices=LANGUAGES, help="repeatable (default both)")
    ap.add_argument("--das-trained", action="store_true",
                    help="run the DAS search on the trained models too (the default searches the constructions)")
    args = ap.parse_args(argv)
    langs = tuple(dict.fromkeys(args.language)) if args.language else LANGUAGES
    st = settings_from_args(Settings, args, languages=langs, das_trained=args.das_trained)
    return run_cli(args, st, run, DEFAULT_MODELS, to_markdown)


if __name__ == "__main__":
    raise SystemExit(main())
