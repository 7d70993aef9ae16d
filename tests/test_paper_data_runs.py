"""Training and evaluating on the paper's stored strings (``--paper-data``): the splits
(:func:`trained_models.config.stored_splits`), a run trained on them, and evaluation on the stored bins."""
from __future__ import annotations

import json

import pytest

import languages
from _paper_repo import fake_paper_repo
from trained_models.config import TrainConfig, make_data
from trained_models.evaluate import evaluate_strings, main as evaluate_main
from trained_models.registry import load
from trained_models.train import main as train_main

LANG = "d2"


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Stored D_2 splits with the paper's quirks: duplicates in train, train strings also in bin0."""
    lang = languages.get(LANG)
    bin0 = lang.sample(30, 2, 20, seed=1)
    bin1 = lang.sample(20, 22, 30, seed=2)
    pool = lang.sample(60, 2, 20, seed=3)
    train = pool + pool[:10] + bin0[:5]  # 10 duplicates, 5 strings leaked from bin0
    splits = {"train": train, "bin0": bin0, "bin1": bin1}
    return fake_paper_repo(tmp_path_factory.mktemp("paper"), LANG, splits), splits


def _cfg(repo, **kw):
    base = dict(language=LANG, n_train=40, n_dev=8, n_test=12, seed=0, paper_data=str(repo))
    return TrainConfig(**{**base, **kw})


def test_stored_splits_are_disjoint_capped_and_seeded(stored):
    repo, splits = stored
    sp = make_data(_cfg(repo), languages.get(LANG))
    assert set(sp) == {"train", "dev", "bin0", "bin1"}
    assert len(sp["train"]) == 40 and len(sp["dev"]) == 8 and len(sp["bin0"]) == len(sp["bin1"]) == 12
    held = set(splits["bin0"]) | set(splits["bin1"])
    assert not set(sp["train"]) & held and not set(sp["dev"]) & held  # bin0 stays held out
    assert not set(sp["train"]) & set(sp["dev"]) and len(set(sp["dev"])) == 8
    assert set(sp["train"]) <= set(splits["train"]) and set(sp["bin0"]) <= set(splits["bin0"])
    order = {s: i for i, s in enumerate(splits["bin1"])}
    assert [order[s] for s in sp["bin1"]] == sorted(order[s] for s in sp["bin1"])  # stored order kept
    assert make_data(_cfg(repo), languages.get(LANG)) == sp
    other = make_data(_cfg(repo, seed=1), languages.get(LANG))
    assert other["dev"] != sp["dev"]
    everything = make_data(_cfg(repo, n_train=10**6, n_test=10**6), languages.get(LANG))
    assert everything["bin0"] == splits["bin0"]
    # every other stored training string stays, in stored order, the duplicates too
    kept = [x for x in splits["train"] if x not in held and x not in everything["dev"]]
    assert everything["train"] == kept and len(kept) > len(set(kept))


def test_a_stored_string_outside_the_language_is_named(tmp_path):
    repo = fake_paper_repo(tmp_path / "bad", LANG, {"train": ["ab", "ba"], "bin0": ["ab"], "bin1": ["aabb"]})
    with pytest.raises(ValueError, match=r"train string 1 \('ba'\) is not a member of d2"):
        make_data(_cfg(repo), languages.get(LANG))


def test_train_and_evaluate_on_the_stored_strings(stored, tmp_path):
    repo, splits = stored
    out = tmp_path / "run"
    argv = ["--language", LANG, "--layers", "1", "--d-model", "8", "--d-state", "4", "--n-train", "40", "--n-dev",
            "8", "--n-test", "12", "--batch-size", "8", "--epochs", "2", "--warmup-steps", "1", "--threads", "1",
            "--no-progress", "--paper-data", str(repo), "--out", str(out)]
    assert train_main(argv) == 0
    saved = TrainConfig.from_dict(json.loads((out / "train_config.json").read_text()))
    assert saved.paper_data == str(repo)
    card = json.loads((out / "card.json").read_text())
    assert card["metrics"]["bin0"]["n"] == 12 and card["metrics"]["bin1"]["n"] == 12
    assert train_main(argv[:-2] + ["--resume", "--out", str(out)]) == 0  # the saved config matches


def test_evaluate_paper_data_scores_every_stored_string(stored, tmp_path, capsys):
    repo, splits = stored
    out = tmp_path / "run"
    assert train_main(["--language", LANG, "--layers", "1", "--d-model", "8", "--d-state", "4", "--n-train", "32",
                       "--n-dev", "8", "--n-test", "8", "--batch-size", "8", "--epochs", "1", "--min-len", "2",
                       "--max-len", "20", "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    assert evaluate_main(["--model", str(out), "--paper-data", str(repo), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    model, _ = load(out)
    lang = languages.get(LANG)
    for b in ("bin0", "bin1"):
        assert got["bins"][b]["n"] == len(splits[b])
        assert got["bins"][b]["strict_accuracy"] == pytest.approx(
            evaluate_strings(model, lang, splits[b])["strict_accuracy"])
    assert evaluate_main(["--model", str(out), "--paper-data", str(tmp_path / "nowhere")]) == 2


def test_own_split_rebuilds_what_training_scored(stored, tmp_path, capsys):
    """--own-split bin0 re-scores exactly the card's bin0; a run on the paper's data rebuilds its stored splits."""
    repo, _ = stored
    for extra in (["--min-len", "2", "--max-len", "20"], ["--paper-data", str(repo)]):
        out = tmp_path / f"run{len(extra)}"
        assert train_main(["--language", LANG, "--layers", "1", "--d-model", "8", "--d-state", "4", "--n-train", "40",
                           "--n-dev", "8", "--n-test", "12", "--batch-size", "8", "--epochs", "3", "--lr", "0.01",
                           "--threads", "1", "--no-progress", "--out", str(out),
                           *extra]) == 0
        card = json.loads((out / "card.json").read_text())
        capsys.readouterr()
        assert evaluate_main(["--model", str(out), "--own-split", "train", "bin0", "bin1", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)["bins"]
        assert got["train"]["n"] == 40
        for b in ("bin0", "bin1"):
            assert got[b]["n"] == card["metrics"][b]["n"]
            assert got[b]["strict_accuracy"] == pytest.approx(card["metrics"][b]["strict_accuracy"])
    assert evaluate_main(["--model", str(out), "--own-split", "bin7"]) == 2
    assert "the run has the splits" in capsys.readouterr().err


def test_a_missing_split_is_recognised_under_any_locale(stored, monkeypatch):
    """git's messages are read in English whatever the user's locale (a translated git would hide the
    'does not exist' that marks a missing split)."""
    from languages.paper import stored_split
    repo, _ = stored
    monkeypatch.setenv("LANGUAGE", "de")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")  # with LANGUAGE=de, gettext translates git (where installed)
    assert stored_split(repo, LANG, "bin2", missing_ok=True) == []
    with pytest.raises(FileNotFoundError, match="val_src_bin2"):
        stored_split(repo, LANG, "bin2")


# --------------------------------------------------------------------------- which stored bins a run reports

def test_reported_bins_follow_the_default_windows():
    from languages.paper import reported_bins
    assert reported_bins(languages.get("tomita5")) == ("bin0", "bin1")  # its stored bin2 repeats bin1's window
    assert reported_bins(languages.get("dyck1")) == ("bin0", "bin1", "bin2")

    class Bare:  # no default windows: every stored bin
        name = "bare"
    assert reported_bins(Bare()) == ("bin0", "bin1", "bin2")


def test_an_unreported_stored_bin_is_held_out_but_not_scored(stored, tmp_path):
    """d2 reports bin0 and bin1; a stored bin2 (as Tomita 5/6 store) is scored neither by training nor by
    ``evaluate --paper-data``, and its strings stay out of train and dev all the same."""
    from trained_models.evaluate import stored_bins
    _, splits = stored
    lang = languages.get(LANG)
    bin2 = splits["train"][:6]  # strings that are also stored training strings
    repo = fake_paper_repo(tmp_path / "with-bin2", LANG, {**splits, "bin2": bin2})
    sp = make_data(_cfg(repo, n_train=10**6, n_dev=4), lang)
    assert [k for k in sp if k.startswith("bin")] == ["bin0", "bin1"] == list(stored_bins(str(repo), lang))
    assert not set(bin2) & (set(sp["train"]) | set(sp["dev"]))
    # the same seed without the stored bin2 keeps those strings in training
    assert set(bin2) & set(make_data(_cfg(stored[0], n_train=10**6, n_dev=4), lang)["train"])


def test_windows_other_than_the_languages_own_are_refused(stored, tmp_path, capsys):
    repo, _ = stored
    lang = languages.get(LANG)
    own = {k: tuple(v) for k, v in lang.default_bins.items()}
    tests = {k: v for k, v in own.items() if k != "train"}
    # the suite's self-contained commands give the language's own windows: the same splits as none
    assert make_data(_cfg(repo, train_window=own["train"], test_windows=tests), lang) == make_data(_cfg(repo), lang)
    for kw in ({"train_window": (2, 8)}, {"test_windows": {**tests, "bin1": (3, 9)}},
               {"test_windows": {"bin0": tests["bin0"]}}, {"test_windows": {**tests, "bin2": (200, 300)}}):
        with pytest.raises(ValueError, match="the stored strings fix the windows of d2"):
            make_data(_cfg(repo, **kw), lang)
    out = tmp_path / "run"
    assert train_main(["--language", LANG, "--n-train", "8", "--paper-data", str(repo), "--test-window", "bin1=3:9",
                       "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bin1=3:9" in err and "fix the windows" in err
    assert not out.exists() or not any(out.iterdir())
