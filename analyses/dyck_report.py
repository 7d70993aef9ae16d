"""The Dyck study's verdicts and its written report (:mod:`analyses.dyck_probe` computes the records).

:func:`verdict` reads the probes and whole-layer swaps, :func:`das_verdict` the learned subspaces: does
the model implement the construction's depth counter -> per-depth memory? :func:`to_markdown` writes
``report.md``; :func:`das_table` the ``--das-table`` file.
"""
from __future__ import annotations

import math

from analyses.common import Subject, das_carrier, das_markdown, das_sentence
from analyses.study import fmt as _fmt, md_table

# A probe "finds" a variable at or above this held-out accuracy. Calibrated on the exact construction:
# at the default probe budget its last layer's top bracket (one probe per depth, deep stacks rare) reads
# 0.94-0.96 over seeds 0-2 (results/dyck_probe_seeds.md), so 0.95 failed the reference itself on one seed.
PROBE_OK = 0.9
IIA_OK = 0.9  # a layer "implements" a variable at or above this IIA


def das_verdict(subject: Subject, m: dict, K: int, h: int) -> str:
    """The verdict on the DAS records: which layers carry each variable causally, in how many
    dimensions (:func:`analyses.common.das_sentence`), and how that differs from the construction
    (depth: layer 1, one dimension; top: layer 2, one block of bits per depth)."""
    das = m.get("das") or []
    if not das:
        return ""
    b = math.ceil(math.log2(K))
    want = {"depth": ((1,), "layer 1, 1 dimension"),
            "top": ((2,), f"layer 2, {h * b} dimensions ({h * (b + 1)} in dyck_mamba)")}
    parts, matches, found = [], 0, 0
    for variable in ("depth", "top"):
        r = das_carrier(das, variable)
        found += r is not None
        layers_want = want[variable][0] if subject.n_layers > 1 else (1,)
        matches += r is not None and tuple(r["layers"]) == layers_want and (variable != "depth" or r["rank"] == 1)
        parts.append(das_sentence(das, variable) + f"; construction: {want[variable][1]}")
    head = "Yes" if matches == 2 and subject.n_layers > 1 else ("Partly" if found else "No")
    return f"{head} (DAS): " + "; ".join(parts) + "."


def verdict(subject: Subject, report: dict) -> str:
    """One sentence: does the model implement depth counter -> per-depth memory? (Probes and
    whole-layer swaps; :func:`das_verdict` gives the one built on learned subspaces.)"""
    probes, iia = report["probes"], report["iia"]

    def best_probe(var: str, layer: int) -> float:
        xs = [v for p in probes if p["variable"] == var and p["layer"] == layer
              for v in (p["accuracy"], p.get("accuracy_given_depth")) if v is not None]
        return max(xs) if xs else float("nan")

    def iia_of(var: str, layer: int) -> float:
        xs = [r["iia"] for r in iia if r["variable"] == var and r["layer"] == layer]
        return xs[0] if xs else float("nan")

    acc_out = report["close_accuracy"]["out"]
    if subject.n_layers < 2:
        d, t = best_probe("depth", 0), best_probe("top", 0)
        return (f"One layer cannot hold the construction's two stages: depth probe {d:.2f}, top probe {t:.2f}, "
                f"close accuracy out of distribution {acc_out:.2f}.")
    d0, t1 = best_probe("depth", 0), best_probe("top", subject.n_layers - 1)
    i0, i1 = iia_of("depth", 0), iia_of("top", subject.n_layers - 1)
    counter = d0 >= PROBE_OK and i0 >= IIA_OK
    memory = t1 >= PROBE_OK and i1 >= IIA_OK
    if counter and memory:
        return (f"Yes: layer 1 carries depth (probe {d0:.2f}) and swapping it moves predictions as the depth "
                f"counter says (IIA {i0:.2f}); the last layer carries the top bracket (probe {t1:.2f}, IIA {i1:.2f}).")
    parts = []
    parts.append(f"depth in layer 1: probe {d0:.2f}, IIA {i0:.2f}" + ("" if counter else " (short of the mechanism)"))
    parts.append(f"top in the last layer: probe {t1:.2f}, IIA {i1:.2f}" + ("" if memory else " (short of the mechanism)"))
    head = "Partly" if (counter or memory or max(d0, t1) >= PROBE_OK) else "No"
    return f"{head}: " + "; ".join(parts) + f"; close accuracy out of distribution {acc_out:.2f}."


def to_markdown(report: dict) -> str:
    st = report["settings"]
    lines = [f"# Dyck({st['K']},{st['h']}) probe report", "",
             f"In: lengths {st['in_window'][0]}–{st['in_window'][1]}; out: {st['out_window'][0]}–{st['out_window'][1]}; "
             f"{st['n']} strings each; seed {st['seed']}. Run time {report['seconds']} s, peak RSS {report['peak_rss_mb']} MB.",
             ""]
    lines += ["## Verdicts", ""]
    for name, m in report["models"].items():
        if m.get("verdict_das"):
            lines.append(f"- **{name}**: {m['verdict_das']}")
        if "verdict" in m:
            lines.append(f"- **{name}** (probes, whole-layer swaps): {m['verdict']}")
    models = report["models"]
    lines += ["", "## Close accuracy", ""]
    lines += md_table(["model", "in", "out"],
                      ([name, m["close_accuracy"]["in"], m["close_accuracy"]["out"]] for name, m in models.items()), 3)
    lines += ["", "## Probes (held-out accuracy; depth = rounded ridge readout; top | depth = one probe per depth)", ""]
    lines += md_table(["model", "layer", "site", "variable", "accuracy", "selectivity", "control", "majority",
                       "random init", "tokens", "counts", "out of distribution", "top | depth (in / out)"],
                      ([name, p["layer"] + 1, p["site"].split(".")[-1], p["variable"], p["accuracy"], p["selectivity"],
                        p["control"], p["majority"], p["random_init"], p["input_token"], p["input_counts"],
                        p["ood_accuracy"],
                        f"{_fmt(p.get('accuracy_given_depth'))} / {_fmt(p.get('ood_accuracy_given_depth'))}"
                        if p.get("accuracy_given_depth") is not None else None]
                       for name, m in models.items() for p in m.get("probes", [])))
    lines += ["", "## Interchange interventions", "",
              "A pair counts when, after the swap, every continuation position whose counterfactual stack is "
              "non-empty gives the counterfactual's closing bracket p / Σ p(closes) > 0.8 (close accuracy).", ""]
    lines += md_table(["model", "layer swapped", "variable", "IIA", "random-pair baseline", "pairs (excluded)"],
                      ([name, r["layer"] if r["layer"] == "all" else r["layer"] + 1, r["variable"], r["iia"],
                        r["baseline"], f"{r['n_pairs']} ({r['n_excluded']})"]
                       for name, m in models.items() for r in m.get("iia", [])))
    lines += das_markdown(report["models"])
    lines += ["", "## Alignment with the construction (model layer vs construction layer)", ""]
    lines += md_table(["model", "layer", "construction layer", "R² (construction from model)",
                       "R² (model from construction)", "CKA"],
                      ([name, a["layer"] + 1, a["construction_layer"] + 1, a["r2"], a["r2_reverse"], a["cka"]]
                       for name, m in models.items() for a in m.get("alignment", [])))
    if report.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def das_table(report: dict, command: str) -> str:
    """The DAS verdicts and the IIA-vs-rank table with every control (``--das-table``)."""
    st = report["settings"]
    lines = [f"# Distributed alignment search on Dyck({st['K']},{st['h']}): IIA against rank, with controls", "",
             f"Generated by `{command}` (seed {st['seed']}; {st['das_pairs']} + {st['das_pairs'] // 2} training "
             f"pairs, {st['das_test_pairs']} held-out pairs, {st['das_steps']} steps at lr {st['das_lr']} "
             f"({st['das_schedule']}), ranks {list(st['das_ranks'])}, state parts {list(st['das_parts'])}; "
             f"run time {report['seconds']} s).", "", "## Verdicts", ""]
    lines += [f"- **{name}**: {m['verdict_das']}" for name, m in report["models"].items() if m.get("verdict_das")]
    return "\n".join(lines + das_markdown(report["models"])) + "\n"
