"""What the studies in :mod:`analyses` measure alike: subjects, data, probes and the DAS section.

The skeleton around it (command line, run loop, reports) is :mod:`analyses.study`.

* :class:`Subject` -- a model under study (name, module, family, layers, card, language) and the hook
  sites to probe per layer; :func:`construction_subject`, :func:`load_subjects` (the shipped or
  run-directory models, skipping the missing ones with a note), :func:`language_is` (which models a
  study accepts) and :func:`random_like` (the same architecture at random initialisation, for the
  probe baseline).
* Data: :func:`train_window` (a model card's, else the language's defaults), :func:`sample_upto` (at
  most the strings a window holds), :func:`split_strings` (disjoint probe train / test strings),
  :func:`strict_by_bin` (strict accuracy per length bin).
* Probes: :func:`probe_collections` (held-out sets and the random-init baseline), :func:`probe_rows`
  flattens :func:`probe.grid.probe_grid` records into the report's rows; :func:`with_token_label`
  (probe a variable given the current token); :func:`best_row`, :func:`first_below`.
* Distributed alignment search: :func:`das_section`, :func:`das_sentence`, :func:`das_markdown`,
  :func:`das_figure`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

import languages
from analyses.figures import das_rank_curves
from analyses.study import fmt, md_table, save_and_close
from probe.das_search import DASConfig
from probe.das_study import SweepSettings, best_per_site, sweep_subject
from trained_models import load
from trained_models.build import MAMBA_FAMILIES, build_model
from trained_models.evaluate import evaluate_strings

# --------------------------------------------------------------------------- subjects


@dataclass
class Subject:
    """A model under study: its name, the module, its family and the sites to probe per layer.

    ``family`` is ``construction``, ``mamba``, ``mamba2`` or ``transformer``; ``language`` is the language object
    the model was trained on (a construction's own); ``card`` the model card (None for constructions).
    """

    name: str
    model: torch.nn.Module
    family: str
    n_layers: int
    card: Optional[dict] = None
    language: Any = None

    def sites(self) -> list[str]:
        """Per layer: the recurrent state and the residual stream after the block (Transformers: the
        residual stream only)."""
        if self.family in MAMBA_FAMILIES:
            per = ["blocks.{l}.mixer.hook_ssm_state", "blocks.{l}.hook_resid_post"]
        elif self.family == "construction":
            per = ["blocks.{l}.hook_ssm_state", "blocks.{l}.hook_resid_post"]
        else:
            per = ["blocks.{l}.hook_resid_post"]
        return [p.format(l=l) for l in range(self.n_layers) for p in per]

    def state_site(self, layer: int) -> str:
        if self.family in MAMBA_FAMILIES:
            return f"blocks.{layer}.mixer.hook_ssm_state"
        if self.family == "construction":
            return f"blocks.{layer}.hook_ssm_state"
        return f"blocks.{layer}.hook_resid_post"

    @property
    def batch_size(self) -> int:
        return 8 if self.family == "transformer" else 16

    @property
    def decode(self) -> str:
        return (self.card or {}).get("decode", "sigmoid")

    @property
    def gate(self) -> Optional[str]:
        """The Mamba gate (``nonnegative`` / ``signed`` / ``time_invariant``), else None."""
        return ((self.card or {}).get("model", {}).get("config", {}) or {}).get("gate")


def construction_subject(name: str, construction: Any) -> Subject:
    """A :class:`hooks.constructions.Construction` as a subject (one layer per state hook)."""
    return Subject(name, construction.model, "construction", len(construction.state_hooks), None,
                   construction.language)


def load_subjects(names: Iterable[str], accept: Callable[[dict], Optional[str]]
                  ) -> tuple[list[Subject], list[str]]:
    """Load each named model (shipped name or run directory); returns ``(subjects, skipped)``.

    A model that does not exist (yet), or whose checkpoint cannot be read, is skipped with a note in
    ``skipped``. ``accept(card)`` returns
    None for a model the study can use, or the reason it cannot (the study was asked for a model of
    another language): that is an error, raised as ``SystemExit`` with the reason.
    """
    subjects, skipped = [], []
    for name in names:
        try:
            model, card = load(name)
        except FileNotFoundError:
            skipped.append(f"{name}: not found (not shipped yet, and no run directory of that name)")
            continue
        except (ValueError, KeyError, OSError) as e:  # e.g. a checkpoint caught mid-update
            skipped.append(f"{name}: could not be loaded ({type(e).__name__}: {e})")
            continue
        reason = accept(card)
        if reason is not None:
            raise SystemExit(f"{name}: {reason}")
        lang = card["language"]
        language = languages.get(lang["name"], **(lang.get("params") or {}))
        subjects.append(Subject(Path(str(name)).name, model, card["model"]["family"],
                                int(card["model"]["config"]["n_layers"]), card, language))
    return subjects, skipped


def language_is(*names: str, **params: Any) -> Callable[[dict], Optional[str]]:
    """An ``accept`` for :func:`load_subjects`: the card's language is one of ``names``, with the
    given ``params`` (e.g. ``language_is("dyck", K=8, h=10)``)."""
    want = " or ".join(names) + "".join(f" {k}={v}" for k, v in params.items())

    def accept(card: dict) -> Optional[str]:
        lang = card.get("language", {})
        have = lang.get("params") or {}
        if lang.get("name") in names and all(have.get(k) == v for k, v in params.items()):
            return None
        what = f"{lang.get('name')} {have}" if have else f"{lang.get('name')}"
        return f"trained on {what}, not {want}"

    return accept


def random_like(subject: Subject, seed: int = 1) -> Optional[torch.nn.Module]:
    """The subject's architecture at random initialisation (None for a construction)."""
    if subject.family == "construction" or subject.card is None:
        return None
    torch.manual_seed(seed)
    spec = dict(subject.card["model"])
    cfg = dict(spec["config"])
    if "seed" in cfg:
        cfg["seed"] = seed
    return build_model({"family": spec["family"], "config": cfg}).eval()


# --------------------------------------------------------------------------- data


def train_window(subject: Optional[Subject], language: Any, default: Optional[tuple[int, int]] = None
                 ) -> tuple[int, int]:
    """The training lengths: the card's ``train_window``, else ``default``, else the language's."""
    if subject is not None and subject.card and subject.card.get("train_window"):
        lo, hi = subject.card["train_window"]
        return int(lo), int(hi)
    if default is not None:
        return default
    return tuple(language.default_bins["train"])  # type: ignore[return-value]


def sample_upto(language: Any, n: int, window: Sequence[int], seed: int,
                exclude: Optional[Iterable[str]] = None) -> list[str]:
    """At most ``n`` distinct strings of the window (fewer when the window holds fewer, e.g. a^n b^n
    has one string per even length); ``exclude`` is left out."""
    lo, hi = int(window[0]), int(window[1])
    excl = set(exclude or ())
    count = language.count_window(lo, hi)
    if count is not None:
        n = min(n, count - sum(1 for x in excl if lo <= len(x) <= hi))
    if n <= 0:
        return []
    return language.sample(n, lo, hi, seed=seed, exclude=excl or None)


def split_strings(language: Any, n_train: int, n_test: int, window: Sequence[int], seed: int
                  ) -> tuple[list[str], list[str]]:
    """Disjoint probe-train and probe-test strings from one window (split by sequence). When the
    window holds fewer than ``n_train + n_test`` strings, they are shared in the same proportion."""
    pool = sample_upto(language, n_train + n_test, window, seed)
    k = int(round(len(pool) * n_train / max(n_train + n_test, 1)))
    k = min(max(k, 1), len(pool) - 1) if len(pool) >= 2 else len(pool)
    return pool[:k], pool[k:]


def strict_by_bin(subject: Subject, language: Any, bins: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """``trained_models.evaluate.evaluate_strings`` per named bin of strings (empty bins skipped)."""
    out = {}
    for name, strings in bins.items():
        if strings:
            out[name] = evaluate_strings(subject.model, language, list(strings), decode=subject.decode,
                                         batch_size=subject.batch_size)
    return out


def edges_to_bins(edges: Sequence[int]) -> list[tuple[int, int]]:
    """``[e0, e1, ...]`` -> inclusive windows ``[(e0, e1 - 1), (e1, e2 - 1), ...]``."""
    return [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def bin_name(window: Sequence[int]) -> str:
    return f"{int(window[0])}-{int(window[1])}"


# --------------------------------------------------------------------------- probes


def probe_collections(subject: Subject, coll: Callable[..., Any], train: Any, test: Any, st: Any
                      ) -> tuple[Any, Any, Optional[tuple[Any, Any]], list[str]]:
    """The held-out probing sets every study uses: ``(train, test, random_init, baselines)``.

    ``coll(model, what, positions, seed)`` collects activations (``what``: the study's key or strings);
    train uses ``st.probe_positions`` and ``st.seed``, test ``st.test_positions`` and ``st.seed + 1``.
    ``random_init`` is the same pair collected from :func:`random_like` (None for a construction);
    ``baselines`` are the :func:`probe.grid.probe_grid` baselines that apply."""
    tr = coll(subject.model, train, st.probe_positions, st.seed)
    te = coll(subject.model, test, st.test_positions, st.seed + 1)
    baselines = ["control", "majority", "input_token", "input_counts"]
    rand = None
    rmodel = random_like(subject)
    if rmodel is not None:
        rand = (coll(rmodel, train, st.probe_positions, st.seed), coll(rmodel, test, st.test_positions, st.seed + 1))
        baselines.append("random_init")
    return tr, te, rand, baselines


def probe_rows(records: Sequence[Any], ood_names: Sequence[str] = ()) -> list[dict]:
    """Report rows of :func:`probe.grid.probe_grid` records (:class:`probe.grid.ProbeRecord`).

    ``accuracy`` is held-out accuracy (the rounded readout for a regression target, whose R^2 is
    ``r2``); ``ood`` maps each OOD bin to its accuracy (and ``ood_r2`` to its R^2 for regression);
    ``ood_beyond`` (regression) the accuracy on OOD positions whose value exceeds every training
    value, where probe_grid measured it.
    """
    out = []
    for r in records:
        row = {
            "layer": r.layer, "site": r.site, "variable": r.variable, "accuracy": r.accuracy, "r2": r.r2,
            "selectivity": r.selectivity, "control": r.control, "majority": r.majority,
            "random_init": r.random_init, "input_token": r.input_token,
            "input_counts": r.input_counts, "hyper": r.hyper,
            "ood": {b: r.ood[b].accuracy if b in r.ood else None for b in ood_names},
        }
        if r.kind == "regression":
            row["ood_r2"] = {b: r.ood[b].score if b in r.ood else None for b in ood_names}
        out.append(row)
    return out


def with_token_label(collection: Any, name: str = "token") -> Any:
    """Add the current input token as a categorical label ``name`` (codes = token ids, the same in
    every collection of one vocabulary), so :func:`probe.grid.probe_given` can probe a variable with
    one linear probe per current token."""
    size = max(int(collection.vocab_size), int(collection.token.max(initial=0)) + 1)
    collection.labels[name] = collection.token.astype(np.int64)
    collection.kinds[name] = "categorical"
    collection.classes[name] = list(range(size))
    return collection


def best_row(rows: Sequence[dict], variable: str, layer: Optional[int] = None, key: str = "accuracy"
             ) -> Optional[dict]:
    """The row of ``variable`` (at ``layer`` if given) with the highest ``key``."""
    xs = [r for r in rows if r["variable"] == variable and (layer is None or r["layer"] == layer)
          and r.get(key) is not None]
    return max(xs, key=lambda r: r[key]) if xs else None


def first_below(points: Sequence[tuple[Any, Optional[float]]], threshold: float) -> Optional[Any]:
    """The first label whose value is below ``threshold`` (None values skipped), else None."""
    for label, v in points:
        if v is not None and not (isinstance(v, float) and math.isnan(v)) and v < threshold:
            return label
    return None


# --------------------------------------------------------------------------- distributed alignment search


@dataclass
class DASBudget:
    """The DAS search's budget, a base of the studies' ``Settings`` that search with the default budget
    (flip-flop, parity); :attr:`QUICK` is its ``--quick`` form."""

    das_pairs: int = 128  # DAS training pairs (plus das_pairs // 2 across lengths)
    das_test_pairs: int = 48
    das_steps: int = 30
    das_ranks: tuple = (1, 4, 16)
    das_restarts: int = 0

    QUICK = {"das_pairs": 64, "das_test_pairs": 32, "das_steps": 15}


def das_settings(subject: Subject, st: Any, score: str = "sets") -> Any:
    """:class:`probe.das_study.SweepSettings` from a study's ``das_*`` settings and the subject's decoding."""
    return SweepSettings(ranks=tuple(st.das_ranks), restarts=getattr(st, "das_restarts", 0),
                         cfg=DASConfig(steps=st.das_steps, decode=subject.decode, score=score, seed=st.seed,
                                       horizon=getattr(st, "das_horizon", 4), lr=getattr(st, "das_lr", 0.005),
                                       schedule=getattr(st, "das_schedule", "constant")))


def das_markdown(models: Mapping[str, dict]) -> list[str]:
    """The report section for every model's ``das_sweep`` records (one row per rank)."""
    lines = ["", "## Distributed alignment search (IIA of a learned rank-k subspace, every rank searched)", "",
             "Learned subspace vs the random and probe subspaces of the same rank, the whole-site swap, the same "
             "search on a random-init model (best rank only) and the random-pair baseline; 'longer' = held-out "
             "pairs of longer strings.", ""]
    rows = []
    for name, m in models.items():
        for r in m.get("das_sweep", []):
            site = r.get("site") or "L" + "+".join(map(str, r["layers"]))
            rows.append([name, r["variable"], site, f"{r['rank']} / {r['dim']}", r["iia"], r["iia_ood"],
                         r["iia_random_subspace"], f"{fmt(r['iia_probe_subspace'])} ({r['probe_rank']})",
                         r["iia_whole_swap"], r["iia_random_init"], r["baseline"], r["n_pairs"]])
    return lines + md_table(["model", "variable", "site (layers, part)", "rank / width", "IIA", "longer",
                             "random subspace", "probe subspace (rank)", "whole swap", "random init", "random pair",
                             "pairs"], rows)


#: A learned subspace "carries" a variable when its IIA reaches DAS_OK and closes at least DAS_MARGIN of
#: the gap between each control and 1: the random-pair baseline, and the random subspace of the same
#: rank (when the rank is below the width; at full width the two subspaces are the same).
DAS_OK = 0.9
DAS_MARGIN = 0.5


def das_section(subject: Subject, language: Any, variables: Mapping[str, Sequence[Sequence[int]]], st: Any,
                window: Sequence[int], ood_window: Sequence[int], score: str = "sets") -> tuple[list, list]:
    """``(sweep, best)``: :func:`probe.das_study.sweep_subject` with the study's settings (``st.das_*``,
    ``st.seed``) and the best rank per variable and layer set."""
    sweep = sweep_subject(subject.model, language, variables, transformer=subject.family == "transformer",
                          window=tuple(window), ood_window=tuple(ood_window), n_train=st.das_pairs,
                          n_test=st.das_test_pairs, sweep=das_settings(subject, st, score),
                          random_model=random_like(subject), seed=st.seed)
    return sweep, best_per_site(sweep)


def das_carrier(das: Sequence[dict], variable: str) -> Optional[dict]:
    """The record that carries ``variable`` (see :data:`DAS_OK`): fewest layers, then smallest rank."""
    def beats(r: dict) -> bool:
        ctrls = [r["baseline"]] + ([r["iia_random_subspace"]] if r["rank"] < r["dim"] else [])
        return all(r["iia"] - c >= DAS_MARGIN * (1.0 - c) for c in ctrls)

    ok = [r for r in das if r["variable"] == variable and r["iia"] >= DAS_OK and beats(r)]
    return min(ok, key=lambda r: (len(r["layers"]), r["rank"], -r["iia"])) if ok else None


def das_controls(r: dict) -> str:
    """One record's IIA with its controls, for a verdict."""
    ri = f", random-init {fmt(r['iia_random_init'])}" if r.get("iia_random_init") is not None else ""
    ood = f", longer {fmt(r['iia_ood'])}" if r.get("iia_ood") is not None else ""
    return (f"IIA {fmt(r['iia'])}{ood}; random subspace {fmt(r['iia_random_subspace'])}, probe subspace "
            f"{fmt(r['iia_probe_subspace'])}, whole swap {fmt(r['iia_whole_swap'])}{ri}, random pair {fmt(r['baseline'])}")


def das_sentence(das: Sequence[dict], variable: str) -> str:
    """Where ``variable`` is carried causally and in how many dimensions, or the best attempt."""
    r = das_carrier(das, variable)
    if r is not None:
        layers = "+".join(map(str, r["layers"]))
        return (f"{variable}: layer{'s' if len(r['layers']) > 1 else ''} {layers} in {r['rank']} of {r['dim']} "
                f"dimensions ({das_controls(r)})")
    best = max((x for x in das if x["variable"] == variable), key=lambda x: x["iia"], default=None)
    if best is None:
        return f"{variable}: not searched"
    return (f"{variable}: no searched subspace carries it (best: layer{'s' if len(best['layers']) > 1 else ''} "
            f"{'+'.join(map(str, best['layers']))}, rank {best['rank']}: {das_controls(best)})")


def das_panels(models: Mapping[str, dict]) -> dict[str, list[dict]]:
    """``das_sweep`` records grouped into figure panels "model: variable @ site"."""
    panels: dict[str, list[dict]] = {}
    for name, m in models.items():
        for r in m.get("das_sweep", []):
            panels.setdefault(f"{name}: {r['variable']} @ {r['site']}", []).append(r)
    return panels


def das_figure(report: dict, out: Path, formats: Sequence[str]) -> list[Path]:
    """IIA against DAS rank with its controls (:func:`analyses.figures.das_rank_curves`), if any."""
    panels = das_panels(report["models"])
    if not panels:
        return []
    return save_and_close(das_rank_curves(panels, title="DAS: IIA of a learned rank-k subspace, with controls"),
                          out / "das_rank", formats)

