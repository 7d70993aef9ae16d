"""The paper's data sets: length windows and sizes of Sarrof, Veitsman & Hahn (NeurIPS 2024).

Source: the paper's repository ``lacoco-lab/ssm_expressivity`` -- its ``configs/dataset/<name>.yaml``
(``lower_window``, ``upper_window``, ``len_incr``, ``num_val_bins``, ``training_size``, ``test_size``),
the corpus builders of ``src/dataloader_utils.py`` that turn them into windows, and the stored data
sets ``generated_ds/<Language>/`` they produced. The builders use four rules (``lo``, ``hi``, ``inc``
from the config):

* ``tomita`` (Tomita 1-7, ``leak: True``), ``parity``, ``boolean``, ``nonstarfree`` ((aa)*, (aaaa)*,
  (abab)*), ``counter`` (a^n b^n ...): train and bin0 ``[lo, hi]``, bin1 ``[hi + 1, hi + inc]``,
  bin2 ``[hi + inc, hi + 2 inc]`` (the later bins start *at* the previous upper bound);
* ``starfree`` (D_n, aa*bb*cc*dd*ee*, {a,b}*d{b,c}*, {0,1,2}*02*): the lower bound is kept, bin1 is
  ``[lo, hi + inc]``;
* ``dyck`` (Dyck-1): bin1 ``[hi + 2, hi + inc]``, bin2 ``[hi + inc + 2, hi + 2 inc]``;
* ``shuffle`` (Shuffle-k): bin1 ``[hi + 2, hi + inc]``, bin2 ``[hi + inc, hi + 2 inc]``.

For a^n b^n, a^n b^n c^n and a^n b^n c^n d^n the windows bound ``n`` (the repetitions), so the
length windows below are ``k`` times them. The paper reports two bins for the regular languages and
three for the counter languages (``num_val_bins`` is 4 for Tomita 5 and 6, whose extra bins repeat
bin1's window and are not reported); :data:`CONFIG_WINDOWS` holds the reported ones as the configs
give them, :data:`PAPER_WINDOWS` the ones the suite uses (identical but for one documented exception:
bin1 of the star-free languages whose later bins keep the lower bound, :data:`BEYOND_TRAINING`).

Flip-flop (Liu et al.) and Dyck(8, 10) (Yao et al.) come from other code: flip-flop strings have
length 512 (train and both test distributions); Dyck(8, 10) trains on lengths up to 700 and tests on
701-1400 *counting* the END token of Yao et al.'s generator, i.e. up to 698 and 700-1398 brackets
(even lengths; the stored files hold train/dev strings of 2-686 brackets and test strings of
702-1268). See ``results/paper_data.md`` for what we match and every deliberate difference.

``PAPER_SIZES[name] = (training_size, test_size)`` from the configs: the sizes the suite uses at its
largest budget (a smaller budget takes the smaller of the two).

The stored data themselves: :func:`read_stored` reads a file of a clone (or bare mirror) of the paper's
repository, :func:`stored_split` one split of one language (:data:`STORED_DIRS`, :data:`STORED_SPLITS`),
:func:`stored_members` the same strings checked against the language, :func:`stored_fingerprint` a digest of
a language's stored strings (what a run trained on them is keyed by, rather than the clone's path).
"""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from pathlib import Path

__all__ = ["PAPER_WINDOWS", "CONFIG_WINDOWS", "BEYOND_TRAINING", "PAPER_SIZES", "PAPER_CONFIGS", "paper_sizes",
           "STORED_DIRS", "STORED_SPLITS", "read_stored", "stored_split", "stored_members", "stored_fingerprint",
           "stored_commit", "reported_bins", "stored_test_bins", "stored_dir"]


def _windows(rule: str, lo: int, hi: int, inc: int, n_bins: int, scale: int = 1) -> dict[str, tuple[int, int]]:
    if rule == "starfree":
        later = [(lo, hi + inc * i) for i in range(1, n_bins)]
    elif rule == "dyck":
        later = [(hi + inc * (i - 1) + 2, hi + inc * i) for i in range(1, n_bins)]
    elif rule == "shuffle":
        later = [(hi + 2, hi + inc)] + [(hi + inc * (i - 1), hi + inc * i) for i in range(2, n_bins)]
    else:  # tomita, parity, boolean, nonstarfree, counter
        later = [(hi + 1, hi + inc)] + [(hi + inc * (i - 1), hi + inc * i) for i in range(2, n_bins)]
    w = {"train": (lo, hi), "bin0": (lo, hi), **{f"bin{i + 1}": b for i, b in enumerate(later)}}
    return {k: (a * scale, b * scale) for k, (a, b) in w.items()}


# name -> (config file, rule, lower_window, upper_window, len_incr, reported bins, training_size, test_size)
PAPER_CONFIGS: dict[str, tuple] = {
    "tomita1": ("tomita-1.yaml", "tomita", 1, 100, 50, 2, 1000, 50),
    "tomita2": ("tomita-2.yaml", "tomita", 1, 100, 50, 2, 1000, 25),
    "tomita3": ("tomita-3.yaml", "tomita", 1, 100, 50, 2, 10000, 2000),
    "tomita4": ("tomita-4.yaml", "tomita", 1, 100, 50, 2, 10000, 2000),
    "tomita5": ("tomita-5.yaml", "tomita", 1, 100, 50, 2, 10000, 2000),
    "tomita6": ("tomita-6.yaml", "tomita", 1, 100, 50, 2, 10000, 10000),
    "tomita7": ("tomita-7.yaml", "tomita", 1, 100, 50, 2, 10000, 2000),
    "d2": ("d-2.yaml", "starfree", 2, 100, 100, 2, 10000, 2000),
    "d3": ("d-3.yaml", "starfree", 2, 100, 100, 2, 10000, 2000),
    "d4": ("d-4.yaml", "starfree", 2, 100, 100, 2, 10000, 2000),
    "d12": ("d-12.yaml", "starfree", 2, 100, 100, 2, 10000, 2000),
    "abcde": ("aa_star_bb_star_cc_star_dd_star_ee_star.yaml", "starfree", 5, 200, 100, 2, 10000, 2000),
    "ab_d_bc": ("ab_star_d_bc_star.yaml", "starfree", 2, 50, 50, 2, 10000, 2000),
    "zot": ("012_star_0_2_star.yaml", "starfree", 2, 50, 50, 2, 10000, 2000),
    "parity": ("parity.yaml", "parity", 2, 50, 50, 2, 10000, 2000),
    "aa_star": ("aa_star.yaml", "nonstarfree", 2, 500, 100, 2, 250, 50),
    "aaaa_star": ("aaaa_star.yaml", "nonstarfree", 4, 500, 100, 2, 125, 25),
    "abab_star": ("abab_star.yaml", "nonstarfree", 4, 500, 100, 2, 125, 25),
    "dyck1": ("dyck1.yaml", "dyck", 2, 50, 50, 3, 10000, 2000),
    "shuffle2": ("shuffle-2.yaml", "shuffle", 2, 50, 50, 3, 10000, 2000),
    "shuffle4": ("shuffle-4.yaml", "shuffle", 2, 100, 50, 3, 10000, 2000),
    "shuffle6": ("shuffle-6.yaml", "shuffle", 2, 100, 50, 3, 10000, 2000),
    "boolean3": ("boolean_3.yaml", "boolean", 2, 50, 50, 3, 10000, 2000),
    "boolean5": ("boolean_5.yaml", "boolean", 2, 50, 50, 3, 10000, 2000),
    "anbn": ("anbn.yaml", "counter", 2, 100, 100, 3, 1000, 50),
    "anbncn": ("anbncn.yaml", "counter", 3, 150, 150, 3, 1000, 50),
    "anbncndn": ("anbncndn.yaml", "counter", 4, 200, 200, 3, 1000, 50),
}
_SCALE = {"anbn": 2, "anbncn": 3, "anbncndn": 4}

CONFIG_WINDOWS: dict[str, dict[str, tuple[int, int]]] = {
    name: _windows(rule, lo, hi, inc, n_bins, _SCALE.get(name, 1))
    for name, (_, rule, lo, hi, inc, n_bins, _, _) in PAPER_CONFIGS.items()
}
"""The windows the configs and corpus code give, literally."""

# Star-free bin1 (D_n, abcde, ab_d_bc, zot): the config window [lo, hi + inc] keeps the lower bound, but
# the original generators put almost all of their mass at the long end: in the stored data 100%, 98.5%,
# 99.8%, 100%, 99.3%, 84.4%, 83.7% of the bin1 strings of D_2, D_3, D_4, D_12, abcde, ab_d_bc, zot are
# longer than the training window. Our sampler spreads strings evenly over the window's lengths, so
# [lo, hi + inc] would put half of bin1 at training lengths; we test on [hi + 1, hi + inc] instead
# (the paper's "longer strings" bin; results/paper_data.md).
BEYOND_TRAINING = ("d2", "d3", "d4", "d12", "abcde", "ab_d_bc", "zot")

PAPER_WINDOWS: dict[str, dict[str, tuple[int, int]]] = {
    name: ({**w, "bin1": (w["train"][1] + 1, w["bin1"][1])} if name in BEYOND_TRAINING else dict(w))
    for name, w in CONFIG_WINDOWS.items()
}
"""The windows the suite uses (``default_bins``): :data:`CONFIG_WINDOWS` except bin1 of
:data:`BEYOND_TRAINING`."""

# Flip-flop (the paper loads Liu et al.'s ``synthseq/flipflop``: length 512; 1,000 FFL(0.8) and 1,000
# FFL(0.98) test sequences) and Dyck(8, 10) (``bounded_dyck_expt``: train and dev lengths 1-700 and
# test 701-1400 *including* the END token, i.e. 0-698 / 700-1398 brackets; the empty string aside).
PAPER_WINDOWS["flipflop"] = {"train": (512, 512), "bin0": (512, 512)}
PAPER_WINDOWS["dyck"] = {"train": (2, 698), "bin0": (2, 698), "bin1": (700, 1398)}

PAPER_SIZES: dict[str, tuple[int, int]] = {name: (c[6], c[7]) for name, c in PAPER_CONFIGS.items()}


def paper_sizes(name: str, n_train: int, n_test: int) -> tuple[int, int]:
    """``(n_train, n_test)`` capped by the paper's ``(training_size, test_size)`` for ``name`` (the
    requests unchanged for a language without a paper config)."""
    tr, te = PAPER_SIZES.get(name, (n_train, n_test))
    return min(int(n_train), tr), min(int(n_test), te)


# --------------------------------------------------------------------------- the stored data sets

# our name -> the folder under generated_ds/
STORED_DIRS = {
    "tomita1": "Tomita-1", "tomita2": "Tomita-2", "tomita3": "Tomita-3", "tomita4": "Tomita-4", "tomita5": "Tomita-5",
    "tomita6": "Tomita-6", "tomita7": "Tomita-7", "d2": "D-2", "d3": "D-3", "d4": "D-4", "d12": "D-12",
    "abcde": "AAStarBBStarCCStarDDStarEEStar", "ab_d_bc": "ABStar_D_BCStar", "zot": "012Star_0_2Star",
    "parity": "Parity", "aa_star": "AAStar", "aaaa_star": "AAAAStar", "abab_star": "ABABStar", "dyck1": "Dyck1",
    "shuffle2": "Shuffle2", "shuffle4": "Shuffle4", "shuffle6": "Shuffle6", "boolean3": "Boolean3",
    "boolean5": "Boolean5", "anbn": "anbn", "anbncn": "anbncn", "anbncndn": "anbncndn"}
# split -> (strings file, targets file)
STORED_SPLITS = {"train": ("train_src", "train_tgt"), "bin0": ("val_src_bin0", "val_tgt_bin0"),
                 "bin1": ("val_src_bin1", "val_tgt_bin1"), "bin2": ("val_src_bin2", "val_tgt_bin2")}


def _git(repo: str | Path, *args: str) -> subprocess.CompletedProcess:
    # git's messages in English whatever the user's locale: a missing file is recognised by its text
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_MESSAGES")}
    env["LC_ALL"] = "C"
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)


def stored_commit(repo: str | Path) -> str:
    """The commit (40 hex digits) of the paper's repository at ``repo`` whose stored data are read."""
    proc = _git(repo, "rev-parse", "HEAD")
    if proc.returncode:
        raise FileNotFoundError(f"cannot read the paper's repository at {repo}: {proc.stderr.strip() or 'git failed'}")
    return proc.stdout.strip()


def read_stored(repo: str | Path, path: str, *, missing_ok: bool = False) -> list[str]:
    """The lines of ``path`` in the paper's repository at ``repo`` (a clone or a bare mirror; read at its
    ``HEAD`` with ``git show``). A missing repository is an error that names it; so is a missing file,
    unless ``missing_ok`` (then: no lines)."""
    proc = _git(repo, "show", f"HEAD:{path}")
    if proc.returncode and missing_ok and "does not exist in 'HEAD'" in proc.stderr:
        return []
    if proc.returncode:
        raise FileNotFoundError(f"cannot read {path} from the paper's repository at {repo}: "
                                f"{proc.stderr.strip() or 'git failed'}")
    rows = proc.stdout.split("\n")
    return rows[:-1] if rows and rows[-1] == "" else rows


def stored_dir(name: str) -> str:
    """The folder under ``generated_ds/`` that holds language ``name``'s stored data; an error that lists the
    stored languages if the paper stores none for it."""
    if name not in STORED_DIRS:
        raise ValueError(f"the paper stores no data for {name!r}; stored: {', '.join(STORED_DIRS)}")
    return STORED_DIRS[name]


def stored_split(repo: str | Path, name: str, split: str, what: str = "src", *, missing_ok: bool = False) -> list[str]:
    """One stored split of language ``name`` (``split`` in :data:`STORED_SPLITS`): its strings
    (``what="src"``) or its target lines (``"tgt"``); ``missing_ok``: no lines where the split is not stored."""
    stored_dir(name)
    if split not in STORED_SPLITS or what not in ("src", "tgt"):
        raise ValueError(f"split must be one of {tuple(STORED_SPLITS)} and what 'src' or 'tgt', got {split!r}, {what!r}")
    return read_stored(repo, f"generated_ds/{stored_dir(name)}/{STORED_SPLITS[split][what == 'tgt']}.txt",
                       missing_ok=missing_ok)


def stored_members(repo: str | Path, language, split: str, *, missing_ok: bool = False) -> list[str]:
    """:func:`stored_split`'s strings of ``language`` (a :class:`~languages.base.Language`), each checked to be
    a member: a stored string outside the language is an error that names the split, its index and the string
    (the paper's stored data are all members of ours: ``results/paper_data.md``)."""
    strings = stored_split(repo, language.name, split, missing_ok=missing_ok)
    for i, x in enumerate(strings):
        if not language.accepts(x):
            raise ValueError(f"paper data: stored {split} string {i} ({x[:40]!r}) is not a member of {language.name}")
    return strings


def reported_bins(language) -> tuple[str, ...]:
    """The test bins a run of ``language`` reports, in order: ``bin0`` and every other bin of its
    ``default_bins`` (the paper's windows). The one rule for which stored bins count: the paper's Tomita 5/6
    store a ``bin2`` that repeats bin1's window and is not reported, and a language without default bins
    reports them all."""
    bins = getattr(language, "default_bins", None) or dict.fromkeys(("bin0", "bin1", "bin2"))
    return ("bin0",) + tuple(sorted(b for b in bins if b not in ("train", "bin0")))


def stored_test_bins(repo: str | Path, language) -> dict[str, list[str]]:
    """The paper's stored test bins of ``language`` that a run reports (:func:`reported_bins`; bin0 and bin1
    must be stored, a bin2 that is not is left out), every string checked to be a member (:func:`stored_members`)."""
    bins = {split: stored_members(repo, language, split, missing_ok=split == "bin2")
            for split in reported_bins(language)}
    return {split: strings for split, strings in bins.items() if strings}


@functools.lru_cache(maxsize=None)
def _fingerprint(repo: str, commit: str, name: str) -> str:  # keyed by the commit: the files read are HEAD's
    h = hashlib.sha256(name.encode())
    for split in STORED_SPLITS:
        h.update(f"\x00{split}\x00".encode())
        for x in stored_split(repo, name, split, missing_ok=split != "train"):
            h.update(x.encode() + b"\n")
    return h.hexdigest()[:16]


def stored_fingerprint(repo: str | Path, name: str) -> str:
    """sha256 (16 hex digits) of language ``name``'s stored strings, split by split (``train`` must be
    stored; a missing test bin counts as empty): equal for any clone or mirror holding the same data, and
    different as soon as one stored string changes. Read once per (repository, commit, language)."""
    stored_dir(name)
    return _fingerprint(str(Path(repo).resolve()), stored_commit(repo), name)
