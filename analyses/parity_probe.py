"""Non-negative vs signed gates on PARITY: accuracy, the constant-state witness and the parity bit.

::

    python -m analyses.parity_probe                 # the two shipped parity Mambas + the construction
    python -m analyses.parity_probe --quick
    python -m analyses.parity_probe --model runs/my-parity-run --T 50000 --out outputs/x

The paper's PARITY result: on 1^T every coordinate of a non-negative-gate SSM is monotone, hence constant
from some step on at finite precision, so no such model tracks PARITY at every length; one layer
with gate -1 on '1' (the signed construction) does. For every model (the signed construction
first, as the reference) the report gives

1. strict accuracy per length bin (bin 0 = training lengths, held-out strings; bins 1, 2 longer);
2. the witness (:func:`hooks.constructions.parity_nonnegative_witness`) on BOS + 1^T: per layer,
   the step from which every state coordinate is constant (a constant tail), or none;
3. the parity bit (the DFA's ``state``) probed per layer and site with a logistic probe fit on
   training lengths, scored in and out of distribution, with selectivity and baselines;
4. a one-line verdict.

Writes ``report.json``, ``report.md`` and figures to ``--out`` (default ``outputs/parity_probe``),
every file atomically.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

import languages
from analyses.common import (DASBudget, Subject, best_row, construction_subject, das_figure, das_markdown, das_section,
                             das_sentence, edges_to_bins, language_is, load_subjects, probe_collections, probe_rows,
                             sample_upto, split_strings, strict_by_bin)
from analyses.figures import length_curves, probe_heatmap, OKABE_ITO
from analyses.study import (base_parser, card_summary, end_markdown, finish, fmt, md_table, model_sections, run_cli,
                            save_and_close, settings_from_args, short_site, start)
from hooks.constructions import parity_signed, parity_nonnegative_witness
from languages import cli
from languages.vocab import Vocab
from probe.collect import collect
from probe.conditional import ConditionalProbe
from probe.grid import probe_grid

DEFAULT_MODELS = ("parity-mamba-nonnegative", "parity-mamba-signed")
PROBE_OK = 0.95


@dataclass
class Settings(DASBudget):
    n: int = 160  # strings per length bin
    bins: dict = field(default_factory=lambda: {"bin0": (2, 50), "bin1": (51, 100), "bin2": (101, 200)})
    sub_bin: int = 25  # width of the length-curve sub-bins
    probe_train: int = 300  # strings (training lengths) for the probe fit
    probe_test: int = 100
    probe_positions: int = 4000
    test_positions: int = 1500
    ood_positions: int = 1500
    T: int = 20000  # witness length (1^T)
    seed: int = 0

    @classmethod
    def quick(cls, **kw: Any) -> "Settings":
        base = dict(n=48, probe_train=120, probe_test=40, probe_positions=2000, test_positions=800,
                    ood_positions=800)
        base.update(DASBudget.QUICK)
        base.update(kw)
        return cls(**base)


def load_all(names: Sequence[str]) -> tuple[list[Subject], list[str]]:
    subjects, skipped = load_subjects(names, language_is("parity"))
    return [construction_subject("construction", parity_signed())] + subjects, skipped


# --------------------------------------------------------------------------- measurements


def accuracy_by_bin(subject: Subject, language: Any, strings: dict[str, list[str]], st: Settings) -> dict:
    """Strict accuracy per bin, and per ``sub_bin``-wide length sub-bin for the curve."""
    per_bin, curve = {}, []
    for name, xs in strings.items():
        lo, hi = st.bins[name]
        edges = list(range(lo, hi + 1, st.sub_bin)) + [hi + 1]
        groups = {f"{a}-{b}": [x for x in xs if a <= len(x) <= b] for a, b in edges_to_bins(edges)}
        res = strict_by_bin(subject, language, groups)
        n = sum(r["n"] for r in res.values())
        per_bin[name] = sum(r["strict_accuracy"] * r["n"] for r in res.values()) / max(n, 1)
        for g, r in res.items():
            curve.append((float(np.mean([len(x) for x in groups[g]])), r["strict_accuracy"]))
    return {"strict_accuracy": per_bin, "length_curve": curve}


def witness(subject: Subject, language: Any, T: int) -> dict:
    tid = Vocab(language.alphabet).encode("1")[0]
    w = parity_nonnegative_witness(subject.model, T, token=tid)
    return {
        "T": w.T, "token": "1", "rtol": w.rtol, "min_tail": w.min_tail,
        "layers": [{"hook": l.hook, "size": l.size, "constant_from": l.constant_from,
                    "last_change": l.last_change} for l in w.layers],
        "logits_constant_from": w.logits_constant_from,
        "constant_tail": w.all_constant,
    }


def probe_records(subject: Subject, language: Any, st: Settings, strings: dict[str, list[str]]) -> list[dict]:
    sites = subject.sites()
    ood_names = [b for b in st.bins if b != "bin0"]

    def coll(model: torch.nn.Module, key: str, positions: int, seed: int):
        return collect(model, language, strings[key], sites, ["state"], positions=positions,
                       batch_size=subject.batch_size, seed=seed)

    tr, te, rand, baselines = probe_collections(subject, coll, "probe_train", "probe_test", st)
    ood = {b: coll(subject.model, b, st.ood_positions, st.seed + 2 + i) for i, b in enumerate(ood_names)}
    params = {"Cs": (0.1, 1.0, 10.0), "cv": 2}
    recs = probe_grid(tr, te, variables=["state"], sites=sites, ood=ood, baselines=baselines, random_init=rand,
                      seed=st.seed, probe_params=params, depth_var=None)
    rows = probe_rows(recs, ood_names)
    # The parity bit given the current token: one linear probe per token read last. A signed-gate
    # state can hold the bit with a token-dependent offset (the input term B(x_t)), which a single
    # linear probe cannot undo but one per token can.
    for row in rows:
        scores = given_token(tr, {"in": te, **ood}, row["site"], seed=st.seed)
        row["accuracy_given_token"] = scores["in"]
        row["ood_given_token"] = {b: scores[b] for b in ood_names}
    return rows


def given_token(tr: Any, colls: dict[str, Any], site: str, seed: int = 0) -> dict[str, float]:
    """Accuracy of the parity bit read by one logistic probe per current token (fit on ``tr``) on each
    collection; positions whose token has no training rows count as errors. A token after which the
    bit takes one value only (BOS) predicts that value (``ConditionalProbe.single_class_``)."""
    cp = ConditionalProbe(kind="classification", random_state=seed, probe_params={"Cs": (1.0,)}).fit(
        tr.acts[site], tr.labels["state"], tr.token, groups=tr.seq_id)
    return {name: cp.score(c.acts[site], c.codes_for("state", tr.classes["state"]), c.token)
            for name, c in colls.items()}


def verdict(subject: Subject, m: dict) -> str:
    acc = m["strict_accuracy"]
    acc_s = " / ".join(f"{fmt(acc[b])}" for b in acc)
    w = m["witness"]
    best = best_row(m["probes"], "state")
    pr = ""
    if best is not None:
        outs = " / ".join(fmt(v) for v in best["ood"].values())
        pr = (f"; parity-bit probe (best site, layer {best['layer'] + 1} {short_site(best['site'])}) "
              f"{fmt(best['accuracy'])} in, {outs} out")
    given = best_row(m["probes"], "state", key="accuracy_given_token")
    if given is not None:
        outs = " / ".join(fmt(v) for v in given["ood_given_token"].values())
        pr += (f"; given the current token (layer {given['layer'] + 1} {short_site(given['site'])}) "
               f"{fmt(given['accuracy_given_token'])} in, {outs} out")
    if subject.family == "construction":
        gate = "Signed-gate construction"
    else:
        gate = f"{(subject.gate or '?').capitalize()} gates"
    if w["constant_tail"]:
        steps = max(l["constant_from"] for l in w["layers"])
        return (f"{gate}: on 1^T every state coordinate is constant from step {steps} (logits from "
                f"{w['logits_constant_from']}), so the parity prediction stops alternating there, as the "
                f"theory says for non-negative gates; strict accuracy by bin {acc_s}{pr}.")
    change = max(l["last_change"] for l in w["layers"])
    tracks = all(v >= PROBE_OK for v in acc.values())
    head = "tracks parity at every tested length" if tracks else "does not track parity at every tested length"
    return (f"{gate}: no constant tail on 1^{w['T']} (the state still moves by {change:.3g} per step) and the "
            f"model {head}; strict accuracy by bin {acc_s}{pr}.")


# --------------------------------------------------------------------------- figures


@torch.no_grad()
def witness_figure(subjects: Sequence[Subject], language: Any, T: int):
    """Per model, the largest per-step change of the state on BOS + 1^T against t (log scale)."""
    import matplotlib.pyplot as plt

    tid = Vocab(language.alphabet).encode("1")[0]
    fig, ax = plt.subplots(figsize=(3.4, 2.4))
    for k, subj in enumerate(subjects):
        names = [n for n in subj.model.hook_dict if n.endswith("hook_ssm_state")]
        tokens = torch.full((1, T + 1), tid, dtype=torch.long)
        tokens[0, 0] = 1  # BOS
        _, cache = subj.model.run_with_cache(tokens, names_filter=lambda n: n in names)
        h = torch.cat([cache[n][0].reshape(T + 1, -1).double() for n in names], dim=-1)
        step = (h[1:] - h[:-1]).abs().max(-1).values.numpy()
        step = np.maximum(step, 1e-12)
        ax.plot(np.arange(1, T + 1), step, lw=1.0, color=OKABE_ITO[(k + 1) % len(OKABE_ITO)], label=subj.name)
    ax.set_yscale("log")
    ax.set_xlabel("t (symbols '1' read)")
    ax.set_ylabel("max |h_t - h_{t-1}|")
    ax.set_title("States on 1^T (1e-12 = no change)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def report_figures(report: dict, subjects: Sequence[Subject], language: Any, st: Settings, out: Path,
                   formats: Sequence[str]) -> list[Path]:
    paths = []
    curves = {name: m["length_curve"] for name, m in report["models"].items() if m.get("length_curve")}
    paths += save_and_close(length_curves(curves, train_max=st.bins["bin0"][1], ylabel="strict accuracy",
                                       title="PARITY: strict accuracy against length"),
                         out / "length_generalization", formats)
    for name, m in report["models"].items():
        recs = []
        for r in m["probes"]:
            recs.append(dict(r, variable="in distribution", score=r["accuracy"]))
            recs += [dict(r, variable=b, score=v) for b, v in r["ood"].items() if v is not None]
        if recs:
            paths += save_and_close(probe_heatmap(recs, title=f"{name}: parity-bit probe accuracy"),
                                 out / f"probes_{name}", formats)
    paths += save_and_close(witness_figure(subjects, language, min(st.T, 20000)), out / "witness", formats)
    paths += das_figure(report, out, formats)
    return paths


# --------------------------------------------------------------------------- the run


def _longest_bin(bins: dict) -> tuple[int, int]:
    """The window of the last length bin (the longest strings): DAS's out-of-distribution pairs."""
    later = sorted(k for k in bins if k != "bin0")
    return tuple(bins[later[-1]] if later else bins["bin0"])


def run(names: Sequence[str], st: Settings, out: Path, formats: Sequence[str] = ("png",),
        progress: bool = True, figures: bool = True, jobs: int = 1) -> dict:
    t0 = start(out)  # --out checked before anything is computed
    language = languages.get("parity")
    subjects, skipped = load_all(names)
    strings: dict[str, list[str]] = {b: sample_upto(language, st.n, w, st.seed + 11 + i)
                                     for i, (b, w) in enumerate(st.bins.items())}
    strings["probe_train"], strings["probe_test"] = split_strings(language, st.probe_train, st.probe_test,
                                                                  st.bins["bin0"], st.seed + 13)
    report: dict[str, Any] = {"study": "parity_probe", "settings": asdict(st), "skipped": skipped, "models": {}}
    def section(subj: Subject) -> dict:
        m: dict[str, Any] = {"family": subj.family, "n_layers": subj.n_layers,
                             "gate": "signed" if subj.family == "construction" else subj.gate}
        m.update(accuracy_by_bin(subj, language, {b: strings[b] for b in st.bins}, st))
        if subj.card:
            m["card"] = card_summary(subj.card)
        m["witness"] = witness(subj, language, st.T)
        m["probes"] = probe_records(subj, language, st, strings)
        m["verdict"] = verdict(subj, m)
        m["das_sweep"], m["das"] = das_section(subj, language, {"parity": [(l,) for l in range(subj.n_layers)]},
                                               st, st.bins["bin0"], _longest_bin(st.bins))
        m["verdict"] += f" DAS: {das_sentence(m['das'], 'parity')}."
        return m

    report["models"] = model_sections(subjects, section, jobs, "parity_probe", progress)
    makers = [lambda folder: report_figures(report, subjects, language, st, folder, formats)] if figures else []
    return finish(out, report, t0, to_markdown, makers)  # report and figures replace --out together


def to_markdown(report: dict) -> str:
    st = report["settings"]
    bins = list(st["bins"])
    lines = ["# PARITY: non-negative vs signed gates", "",
             "Bins: " + "; ".join(f"{b} lengths {w[0]}–{w[1]}" for b, w in st["bins"].items())
             + f" ({st['n']} strings each); witness on 1^{st['T']}; seed {st['seed']}. "
             f"Run time {report['seconds']} s, peak RSS {report['peak_rss_mb']} MB.", "", "## Verdicts", ""]
    lines += [f"- **{name}**: {m['verdict']}" for name, m in report["models"].items() if "verdict" in m]
    lines += ["", "## Strict accuracy per length bin", ""]
    lines += md_table(["model", "gate"] + bins,
                      [[name, m.get("gate")] + [m["strict_accuracy"].get(b) for b in bins]
                       for name, m in report["models"].items()], digits=3)
    lines += ["", f"## Witness on BOS + 1^{st['T']} (constant tail = every coordinate constant to float precision)", ""]
    rows = []
    for name, m in report["models"].items():
        w = m["witness"]
        for l in w["layers"]:
            rows.append([name, l["hook"], l["size"], l["constant_from"] if l["constant_from"] is not None else "none",
                         f"{l['last_change']:.3g}",
                         w["logits_constant_from"] if w["logits_constant_from"] is not None else "none"])
    lines += md_table(["model", "state hook", "size", "constant from step", "last change", "logits constant from"],
                      rows)
    lines += das_markdown(report["models"])
    lines += ["", "## Parity-bit probe (logistic on the DFA state; fit on bin-0 lengths)", ""]
    ood = [b for b in bins if b != "bin0"]
    rows = []
    for name, m in report["models"].items():
        for p in m["probes"]:
            given = " / ".join([fmt(p.get("accuracy_given_token"))]
                               + [fmt(p.get("ood_given_token", {}).get(b)) for b in ood])
            rows.append([name, p["layer"] + 1, short_site(p["site"]), p["accuracy"]] + [p["ood"].get(b) for b in ood]
                        + [given, p["selectivity"], p["control"], p["majority"], p["random_init"], p["input_token"],
                           p["input_counts"]])
    lines += md_table(["model", "layer", "site", "in"] + ood + ["given token (in / " + " / ".join(ood) + ")",
                                                               "selectivity", "control", "majority", "random init",
                                                               "tokens", "counts"], rows)
    lines += ["", "Control task (Hewitt & Liang): with three token types (BOS, 0, 1) it is learnable wherever "
              "the site carries the current token, so selectivity is low there by construction. "
              "'Given token': one linear probe per current token."]
    return end_markdown(report, lines)


@cli.cli("python -m analyses.parity_probe")
def main(argv: Optional[list[str]] = None) -> int:
    ap = base_parser("python -m analyses.parity_probe", __doc__, "outputs/parity_probe")
    ap.add_argument("--T", type=cli.positive_int, help="witness length (default 20000)")
    args = ap.parse_args(argv)
    st = settings_from_args(Settings, args, **({"T": args.T} if args.T else {}))
    return run_cli(args, st, run, DEFAULT_MODELS, to_markdown)


if __name__ == "__main__":
    raise SystemExit(main())
