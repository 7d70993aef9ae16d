"""State-trajectory and PCA figures of a Dyck(K, h) model beside the paper's construction.

::

    python -m analyses.dyck_trajectory --model dyck8-10-mamba-2l --out outputs/figures --format svg

Along one string, the automaton's depth and top bracket against linear read-outs of every layer's
state (:func:`analyses.figures.state_trajectory`), and each model's last-layer states projected on
their first two principal components (:func:`analyses.figures.state_projection`).
:mod:`analyses.dyck_probe` draws the same figures for its best two-layer Mamba.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import languages
from analyses.common import Subject, construction_subject, language_is, load_subjects
from analyses.figures import FORMATS, save_figure, state_projection, state_trajectory
from hooks import constructions
from languages import cli
from probe.collect import collect
from probe.conditional import ConditionalProbe
from probe.linear import LinearProbe


def load_dyck_subjects(names: Sequence[str], K: int, h: int, mamba_construction: bool = False
                       ) -> tuple[list[Subject], list[str]]:
    """The construction (and with ``mamba_construction`` its HookedMamba realisation, ``dyck_mamba``)
    plus each requested Dyck(K, h) model that can be loaded; returns (subjects, skipped)."""
    subjects, skipped = load_subjects(names, language_is("dyck", K=K, h=h))
    first = [construction_subject("construction", constructions.dyck(K, h))]
    if mamba_construction:
        c = constructions.dyck_mamba(K, h)
        first.append(Subject("dyck_mamba", c.model, "mamba", 2, None, c.language))
    return first + subjects, skipped


def trajectory_figures(model_name: str, out: Path, formats: Sequence[str] = ("png",), length: int = 120,
                       seed: int = 0, K: int = 8, h: int = 10) -> list[Path]:
    """State-trajectory and PCA figures for one model (``construction``: the construction alone)
    beside the construction; returns the files written."""
    language = languages.get("dyck", K=K, h=h)
    subjects, skipped = load_dyck_subjects([model_name] if model_name != "construction" else [], K, h)
    if skipped:
        raise SystemExit(skipped[0])
    train = language.sample(150, 20, 200, seed=seed)
    string = language.sample(1, length, length, seed=seed + 99)[0]
    tr = language.trace(string, initial=True)
    readouts, tops, panels = {}, {}, {}
    for subj in subjects:
        # One forward pass per subject serves every layer's site (the fits below are per layer).
        sites = [subj.state_site(l) for l in range(subj.n_layers)]
        c = collect(subj.model, language, train, sites, ["depth", "top"], positions=2000, seed=seed)
        one = collect(subj.model, language, [string], sites, ["depth"])
        for l, site in enumerate(sites):
            dprobe = LinearProbe(kind="regression", alphas=(1.0, 10.0, 100.0), cv=2).fit(
                c.acts[site], c.labels["depth"], groups=c.seq_id)
            # The top bracket given the depth (one probe per depth): the construction's last layer
            # holds it as block[depth], which no single linear probe reads (see probe.conditional).
            tprobe = ConditionalProbe(kind="classification", probe_params={"Cs": (1.0,)}).fit(
                c.acts[site], c.labels["top"], c.labels["depth"])
            label = f"{subj.name} L{l + 1}"
            readouts[label] = dprobe.predict(one.acts[site])
            classes = c.classes["top"]
            tops[label] = [classes[i] if i >= 0 else "?" for i in tprobe.predict(one.acts[site], one.labels["depth"])]
            if l == subj.n_layers - 1 or subj.family == "construction" and l == 0:
                panels[f"{subj.name}: layer {l + 1}"] = (c.acts[site][:2000], c.labels["depth"][:2000])
    last = {f"{s.name} L{s.n_layers}" for s in subjects}
    f1 = state_trajectory(string, tr["depth"], readouts, top=tr["top"],
                          top_readouts={k: v for k, v in tops.items() if k in last},
                          title=f"Depth along one Dyck({K},{h}) string: automaton vs linear probes "
                                "(top bracket: one probe per depth)")
    f2 = state_projection(panels, title="States projected on their first two principal components")
    paths = save_figure(f1, out / "trajectory", formats) + save_figure(f2, out / "projection", formats)
    return paths


def trajectory_files_apart(model_name: str, formats: Sequence[str] = ("png",), **kw: Any
                           ) -> tuple[Path, list[Path], str]:
    """:func:`trajectory_figures` drawn into a fresh temporary folder (e.g. in a worker process while the
    study's output folder does not exist yet): ``(folder, files, error)``; a failure is returned as
    ``error``, never raised (a figure must not lose a report). :func:`move_figures` moves them in."""
    folder = Path(tempfile.mkdtemp(prefix="dyck_trajectory-"))
    try:
        return folder, trajectory_figures(model_name, folder, formats, **kw), ""
    except Exception as e:
        return folder, [], f"{type(e).__name__}: {e}"


def move_figures(made: tuple[Path, list[Path], str], folder: Path) -> list[Path]:
    """Move :func:`trajectory_files_apart`'s files into ``folder`` (its error raised here) and remove
    the temporary folder; returns the new paths."""
    tmp, files, error = made
    try:
        if error:
            raise RuntimeError(f"trajectory figures: {error}")
        return [Path(shutil.move(str(f), str(folder / f.name))) for f in files]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@cli.cli("python -m analyses.dyck_trajectory")
def main(argv: Optional[list[str]] = None) -> int:
    ap = cli.ArgumentParser(prog="python -m analyses.dyck_trajectory", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="dyck8-10-mamba-2l", help="shipped name or run directory")
    ap.add_argument("--out", default="outputs/figures", type=cli.out_dir)
    ap.add_argument("--format", action="append", choices=FORMATS, help="repeatable (default png)")
    ap.add_argument("--length", type=cli.positive_int, default=120, help="length of the trajectory string")
    ap.add_argument("--seed", type=cli.nonnegative_int, default=0)
    ap.add_argument("--K", type=cli.positive_int, default=8)
    ap.add_argument("--h", type=cli.positive_int, default=10)
    args = ap.parse_args(argv)
    paths = trajectory_figures(args.model, Path(args.out), formats=args.format or ["png"], length=args.length,
                               seed=args.seed, K=args.K, h=args.h)
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
