"""The shipped models' numbers quoted in README.md, re-measured on fresh strings.

The README's "Shipped models" table is parsed (every ``strict X`` and ``close Y`` of bin0 and bin1, with
the ``n`` it was measured on) and each figure is measured again on strings drawn with another seed from
the same window of the same language, with the model's own decoding. The test fails when the README and
the model disagree beyond what the two sample sizes allow, at the 99.9% level:

* strict accuracy (a string is right or wrong): Fisher's exact test of the two counts, p > 0.001;
* close accuracy (pooled over the positions of each string, so positions of one string are not
  independent): the fresh pooled ratio's cluster (per-string) standard error, widened for the README's
  own sample, and z = 3.29, plus the README's rounding.

A README figure that goes stale (a model retrained, an evaluation changed) breaks this test instead of
staying in the README. The fresh samples are small (CPU: about half a minute on a quiet core) and drawn
with a fixed seed, so the test is deterministic.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from scipy.stats import fisher_exact

import languages
from trained_models import load
from trained_models.evaluate import evaluate_strings

README = Path(__file__).resolve().parents[1] / "README.md"
SEED = 20261130
Z = 3.29  # two-sided 99.9%
#: Fresh strings per figure: enough for the test to notice a stale figure, few enough for ~30 s of CPU
#: (the long Dyck(8,10) windows cost the most).
N_FRESH = {"dyck": 16, "flipflop": 24}
N_FRESH_DEFAULT = 48

ROW = re.compile(r"^\| `(?P<name>[^`]+)` \|(?P<cells>.*)\|$")
FIGURE = re.compile(r"strict (?P<strict>[\d.]+)(?:, close (?P<close>[\d.]+))?[^(]*\(len [\d–]+, n=(?P<n>\d+)\)")


def readme_figures(text: str) -> list[tuple[str, str, str, float, int]]:
    """``(model, bin, metric, value, n)`` for every bin0 / bin1 figure of the Shipped models table
    (strict as a fraction, close as printed)."""
    section = text.split("## Shipped models", 1)[1].split("\n## ", 1)[0]
    out = []
    for line in section.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        cells = [c.strip() for c in m["cells"].split("|")]
        for bin_name, cell in (("bin0", cells[3]), ("bin1", cells[4])):
            f = FIGURE.match(cell)
            if f is None:
                continue
            out.append((m["name"], bin_name, "strict", float(f["strict"]) / 100, int(f["n"])))
            if f["close"] is not None:
                out.append((m["name"], bin_name, "close", float(f["close"]), int(f["n"])))
    return out


FIGURES = readme_figures(README.read_text())


def test_the_readme_table_is_parsed():
    models = {f[0] for f in FIGURES}
    assert len(models) >= 10, models  # every shipped model's row
    assert ("dyck8-10-mamba-2l", "bin1", "close", 0.972, 500) in FIGURES
    assert all(0.0 <= v <= 1.0 and n > 0 for _, _, _, v, n in FIGURES)


def strict_agrees(k: int, n: int, value: float, n0: int) -> tuple[bool, float]:
    """Fisher's exact test of ``k / n`` fresh against the README's ``value`` of ``n0`` (p > 0.001)."""
    k0 = round(value * n0)
    p = fisher_exact([[k, n - k], [k0, n0 - k0]]).pvalue
    return p > 0.001, p


def close_agrees(per_string: list[tuple[float, int]], value: float, n0: int) -> tuple[bool, float, float]:
    """The pooled close accuracy of ``(accuracy, positions)`` per string against the README's ``value``
    (measured on ``n0`` strings): within Z cluster standard errors (both samples) plus the rounding."""
    total = sum(m for _, m in per_string)
    r = sum(a * m for a, m in per_string) / total
    n = len(per_string)
    se = math.sqrt(n / (n - 1) * sum((m * (a - r)) ** 2 for a, m in per_string)) / total
    se = max(se, 1.0 / total)  # a sample with no error at all still has a resolution
    tol = Z * se * math.sqrt(1 + n / n0) + 0.0005
    return abs(r - value) <= tol, r, tol


@pytest.fixture(scope="module")
def models():
    return {}


@pytest.mark.parametrize("name,bin_name", sorted({(f[0], f[1]) for f in FIGURES}))
def test_readme_figure_holds_on_fresh_strings(name, bin_name, models):
    if name not in models:
        models[name] = load(name)
    model, card = models[name]
    lang = card["language"]
    language = languages.get(lang["name"], **(lang.get("params") or {}))
    window = tuple(card["test_windows"].get(bin_name) or card["train_window"])
    n = N_FRESH.get(lang["name"], N_FRESH_DEFAULT)
    count = language.count_window(*window)
    n = n if count is None else min(n, count)
    strings = language.sample(n, *window, seed=SEED)
    decode = card.get("decode", "sigmoid")
    figures = [f for f in FIGURES if f[0] == name and f[1] == bin_name]
    if any(f[2] == "close" for f in figures):  # per string: the close accuracy's cluster standard error
        per_string = [evaluate_strings(model, language, [s], decode=decode, batch_size=1) for s in strings]
        k = sum(round(r["strict_accuracy"]) for r in per_string)
    else:
        k = round(evaluate_strings(model, language, strings, decode=decode, batch_size=16)["strict_accuracy"]
                  * len(strings))
    for _, b, metric, value, n0 in figures:
        if metric == "strict":
            ok, p = strict_agrees(k, len(strings), value, n0)
            assert ok, (f"{name} {b}: README strict {100 * value:.1f} (n={n0}) but {k}/{len(strings)} fresh strings "
                        f"right (Fisher p = {p:.2g})")
        else:
            ok, r, tol = close_agrees([(x["close_accuracy"], x["close_positions"]) for x in per_string
                                       if x.get("close_positions")], value, n0)
            assert ok, f"{name} {b}: README close {value:.3f} (n={n0}) but {r:.3f} on fresh strings (tolerance {tol:.3f})"


def test_the_tolerances_reject_a_stale_figure():
    # A README that says 100.0 of 1000 against 40 of 48 fresh strings, or 93.1 of 58 against 10 of 48.
    assert not strict_agrees(40, 48, 1.0, 1000)[0] and not strict_agrees(10, 48, 0.931, 58)[0]
    assert strict_agrees(47, 48, 1.0, 1000)[0] and strict_agrees(44, 48, 0.931, 58)[0]
    # Close accuracy: 0.972 claimed, 0.90 measured on 16 strings of ~1000 positions each.
    spread = [(0.90 + 0.01 * ((i % 3) - 1), 1000) for i in range(16)]
    assert not close_agrees(spread, 0.972, 500)[0] and close_agrees(spread, 0.90, 500)[0]
