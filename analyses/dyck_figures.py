"""The Dyck study's figures: probe heatmaps, whole-layer IIA, DAS against rank, patching, length curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from analyses.common import das_figure
from analyses.figures import iia_heatmap, length_curves, patching_heatmap, probe_heatmap, save_figure


def report_figures(report: dict, out: Path, formats: Sequence[str]) -> list[Path]:
    """Every figure of the report (probe heatmaps per model, whole-layer IIA, :func:`das_figures`, close
    accuracy against length) written to ``out`` in ``formats``; returns the paths."""
    paths = []
    for name, m in report["models"].items():
        recs = [dict(r, score=r["accuracy"]) for r in m.get("probes", []) if r["accuracy"] is not None]
        if recs:
            paths += save_figure(probe_heatmap(recs, title=f"{name}: probe accuracy (held out)"),
                                 out / f"probes_{name}", formats)
    names = list(report["models"])
    rows, labels = [], []
    for name in names:
        for r in report["models"][name].get("iia", []):
            if r["layer"] == "all":
                continue
            labels.append(f"{name} L{r['layer'] + 1} {r['variable']}")
            rows.append([r["iia"], r["baseline"]])
    if rows:
        paths += save_figure(iia_heatmap(np.array(rows), labels, ["IIA", "random-pair baseline"], xlabel="",
                                         rotation=0, title="Whole-layer swaps: IIA and its random-pair baseline"),
                             out / "iia", formats)
    paths += das_figures(report, out, formats)
    curves = {name: m["length_curve"] for name, m in report["models"].items() if m.get("length_curve")}
    if curves:
        paths += save_figure(length_curves(curves, train_max=report["settings"]["in_window"][1],
                                           ylabel="close accuracy", title="Close accuracy against length"),
                             out / "length_generalization", formats)
    return paths


def das_figures(report: dict, out: Path, formats: Sequence[str]) -> list[Path]:
    """IIA against rank per model, variable and layer set (with controls), and the patching heatmap."""
    paths = das_figure(report, out, formats)
    rows, labels, title = [], [], ""
    for name, m in report["models"].items():  # one heatmap: every model, site and layer on the same prefixes
        for key, p in (m.get("patching") or {}).items():
            rows += p["scores"]
            labels += [f"{name} {key} L{l + 1}" for l in range(len(p["scores"]))]
            title = f"Patching (top bracket, {p['n']} prefixes of length {p['length']}): 0 corrupted .. 1 clean"
    if rows and len({len(r) for r in rows}) == 1:
        paths += save_figure(patching_heatmap(np.array(rows), labels, title=title), out / "patching", formats)
    return paths
