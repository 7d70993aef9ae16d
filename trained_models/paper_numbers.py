"""The paper's reported numbers for the Bhattamishra suite, keyed by our language names.

Transcribed by hand from the paper's repository
(``lacoco-lab/ssm_expressivity``, ``visualisation/main_expt_results.xlsx``, sheets "Regular1",
"Regular2" and "Counter"). Strict (whole-string) accuracy in %. The Transformer numbers are
Bhattamishra et al.'s (2020), as copied by the paper; ``transformer_pos`` is the variant those numbers
come from ("pos mask" = causal masking without positional encoding, "pos enc" = with positional
encoding, ``None`` where the source does not say).

Bins are named as in our registry: the paper's "Bin1" (held-out strings of the training lengths) is our
``bin0``, its "Bin2" our ``bin1``, its "Bin3" (counter sheet only) our ``bin2``.

>>> PAPER["parity"]["Mamba3"]
{'bin0': 91.15, 'bin1': 16.7}
"""
from __future__ import annotations

from typing import Optional

MODELS = ("Mamba1", "Mamba2", "Mamba3", "Transformer")
CLASSES = ("star-free", "non-star-free", "counter")
_BINS = ("bin0", "bin1", "bin2")


def _b(*values: float) -> dict[str, float]:
    return {name: float(v) for name, v in zip(_BINS, values)}


def _row(cls: str, label: str, pos: Optional[str], transformer: tuple, m1: tuple, m2: tuple, m3: tuple) -> dict:
    return {"class": cls, "label": label, "transformer_pos": pos, "Transformer": _b(*transformer),
            "Mamba1": _b(*m1), "Mamba2": _b(*m2), "Mamba3": _b(*m3)}


_SF, _NSF, _C = CLASSES

PAPER: dict[str, dict] = {
    # Sheet "Regular1": star-free languages (bin0 / bin1).
    "tomita1": _row(_SF, "Tomita 1", "pos mask", (100, 100), (100, 100), (100, 100), (100, 100)),
    "tomita4": _row(_SF, "Tomita 4", "pos enc", (100, 92.4), (100, 100), (100, 100), (100, 100)),
    "tomita7": _row(_SF, "Tomita 7", "pos mask", (100, 100), (100, 100), (100, 100), (100, 100)),
    "tomita2": _row(_SF, "Tomita 2", None, (100, 100), (100, 100), (100, 100), (100, 100)),
    "abcde": _row(_SF, "aa*bb*cc*dd*ee*", "pos mask", (100, 100), (100, 100), (100, 100), (100, 100)),
    "ab_d_bc": _row(_SF, "{a,b}*d{b,c}*", "pos mask", (100, 100), (100, 100), (100, 100), (100, 100)),
    "zot": _row(_SF, "{0,1,2}*02*", None, (100, 68.7), (100, 100), (100, 100), (100, 100)),
    "d2": _row(_SF, "D_2", "pos mask", (74.6, 3.1), (100, 100), (100, 100), (100, 100)),
    "d3": _row(_SF, "D_3", "pos mask", (80.9, 8.5), (100, 100), (100, 100), (100, 100)),
    "d4": _row(_SF, "D_4", "pos mask", (90.2, 3.3), (100, 100), (100, 100), (100, 100)),
    "d12": _row(_SF, "D_12", "pos mask", (95.18, 1.5), (93.65, 93.35), (99.9, 95.55), (99.99, 99.85)),
    # Sheet "Regular2": non-star-free languages (bin0 / bin1); Transformer "pos mask unless noted".
    "parity": _row(_NSF, "Parity", "pos mask", (68.7, 0), (26.95, 0), (80.05, 4.15), (91.15, 16.7)),
    "aa_star": _row(_NSF, "(aa)*", "pos mask", (100, 0), (2.1, 0), (2.1, 0), (4.2, 0)),
    "aaaa_star": _row(_NSF, "(aaaa)*", "pos mask", (100, 0), (0, 0), (0, 0), (4, 0)),
    "abab_star": _row(_NSF, "(abab)*", "pos mask", (100, 2.5), (0, 0), (0, 0), (0, 0)),
    "tomita3": _row(_NSF, "Tomita 3", "pos mask", (75.4, 10.8), (25.99, 12.49), (36.88, 17.05), (60.85, 29.37)),
    "tomita5": _row(_NSF, "Tomita 5", "pos mask", (29.3, 0), (15.94, 0), (34.5, 0), (38.4, 0)),
    "tomita6": _row(_NSF, "Tomita 6", "pos enc", (88.8, 0), (7.2, 0), (37.8, 0), (54.56, 0.04)),
    # Sheet "Counter" (bin0 / bin1 / bin2).
    "dyck1": _row(_C, "Dyck-1", None, (100, 100, 100), (100, 62.6, 13.91), (100, 49.1, 9.5), (100, 53.95, 10)),
    "shuffle2": _row(_C, "Shuffle-2", None, (100, 100, 93), (100, 49.5, 2.3), (100, 61.5, 8.2), (100, 65.5, 9.7)),
    "shuffle4": _row(_C, "Shuffle-4", None, (100, 100, 98.8), (100, 44.4, 4.3), (100, 63.8, 7.2), (100, 56.2, 7.8)),
    "shuffle6": _row(_C, "Shuffle-6", None, (100, 99.9, 94), (100, 39.4, 3.4), (100, 61.2, 6.75), (100, 59.6, 9.85)),
    "boolean3": _row(_C, "Boolean-3", None, (100, 100, 99.8), (99.75, 65.7, 7.05), (99.95, 47.25, 2.3),
                     (100, 73.45, 8.6)),
    "boolean5": _row(_C, "Boolean-5", None, (100, 99.8, 99), (99.9, 30.05, 7.6), (100, 80.2, 14.9),
                     (99.25, 60.7, 6.25)),
    "anbn": _row(_C, "a^n b^n", None, (100, 100, 100), (100, 4.1, 0), (100, 9.4, 0), (100, 21.3, 0)),
    "anbncn": _row(_C, "a^n b^n c^n", None, (100, 100, 100), (100, 0, 0), (100, 7.6, 0), (100, 5.1, 0)),
    "anbncndn": _row(_C, "a^n b^n c^n d^n", None, (100, 100, 99.4), (100, 4.76, 0), (100, 0, 0), (100, 0, 0)),
}

# The suite's languages in table order: the paper's sheets, each in its own row order.
SUITE = tuple(PAPER)


def paper_bins(language: str, model: str) -> dict[str, float]:
    """The paper's bins for ``language`` (our registry name) and ``model`` (one of :data:`MODELS`)."""
    if language not in PAPER:
        raise KeyError(f"no paper numbers for {language!r}; known: {', '.join(SUITE)}")
    if model not in MODELS:
        raise KeyError(f"model must be one of {MODELS}, got {model!r}")
    return dict(PAPER[language][model])


def transformer_pos_encoding(language: str) -> str:
    """Our Transformer's ``pos_encoding`` for ``language``: Bhattamishra et al.'s reported variant
    ("pos enc" -> ``learned``, "pos mask" -> ``none``); causal masking alone (``none``) where the
    source does not name one (a learned absolute table has no trained rows for the longer bins)."""
    return "learned" if PAPER[language]["transformer_pos"] == "pos enc" else "none"
