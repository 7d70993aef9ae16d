"""languages.datasets: the vocabulary, batch encoding (against a plain per-string loop) and splits."""
from __future__ import annotations

import numpy as np
import pytest

import languages
from languages import END
from languages.datasets import Batch, Vocab, encode_batch, iter_batches, make_splits


def test_vocab_ids_and_errors():
    v = Vocab("ab")
    assert (v.PAD, v.BOS, v.END, v.size, len(v)) == (0, 1, 2, 5, 5)
    assert v.encode("abba") == [3, 4, 4, 3]
    assert v.decode([1, 3, 4, 2, 0, 0]) == "ab"
    assert v.decode(np.array([3, 3])) == "aa"
    with pytest.raises(ValueError, match=r"'c' at position 2"):
        v.encode("abc")
    with pytest.raises(ValueError, match=r"token id 5 at position 1"):
        v.decode([3, 5])
    with pytest.raises(ValueError, match=r"special token .* at position 0"):
        v.decode([1, 3], skip_special=False)
    with pytest.raises(ValueError, match="reserved"):
        Vocab("a$")
    lang = languages.get("dyck", K=2, h=3)
    assert Vocab(lang) == Vocab(lang.alphabet) == lang.vocab
    assert Vocab(lang).encode("([])") == [3, 5, 6, 4]


def test_vocab_inputs_are_bos_ids_then_pad():
    """The one model-input encoder, against the layout written out per string (and encode_batch's tokens)."""
    from languages.vocab import BOS_ID, PAD_ID

    lang = languages.get("dyck", K=2, h=3)
    v = Vocab(lang)
    strings = ["([])", "", "()"]
    want = np.array([[BOS_ID] + v.encode(s) + [PAD_ID] * (4 - len(s)) for s in strings])
    assert v.inputs(strings).dtype == np.int64 and v.inputs(strings).tolist() == want.tolist()
    assert encode_batch(lang, strings).tokens.tolist() == want.tolist()
    assert v.inputs([]).shape == (0, 1)
    assert Vocab(v) == v  # anything with an alphabet


def _check_batch(lang, strings, b: Batch):
    vocab = Vocab(lang.alphabet)
    B = len(strings)
    T = max(len(s) for s in strings) + 1
    assert b.tokens.shape == b.mask.shape == b.membership.shape == b.next_tokens.shape == (B, T)
    assert b.allowed.shape == (B, T, vocab.size)
    assert b.tokens.dtype == b.next_tokens.dtype == b.lengths.dtype == np.int64
    assert b.allowed.dtype == b.mask.dtype == b.membership.dtype == np.bool_
    col = {c: vocab.encode(c)[0] for c in lang.alphabet}
    col[END] = 2
    for i, s in enumerate(strings):
        n = len(s)
        assert b.lengths[i] == n + 1
        assert b.tokens[i].tolist() == [1] + vocab.encode(s) + [0] * (T - n - 1)
        assert b.mask[i].tolist() == [True] * (n + 1) + [False] * (T - n - 1)
        assert b.next_tokens[i].tolist() == vocab.encode(s) + [2] + [0] * (T - n - 1)
        assert b.membership[i].tolist() == lang.prefix_labels(s) + [False] * (T - n - 1)
        expect = np.zeros((T, vocab.size), dtype=bool)
        for t, allowed in enumerate(lang.allowed_next(s)):
            for sym in allowed:
                expect[t, col[sym]] = True
        assert (b.allowed[i] == expect).all()
        tr = lang.trace(s, initial=True)
        assert {k: v[i] for k, v in b.labels.items()} == tr
    assert b.strings == strings


@pytest.mark.parametrize("name", ["dyck", "parity", "anbncn", "flipflop", "boolean5", "shuffle4", "d4", "aa_star"])
def test_encode_batch_matches_per_string_api(name):
    lang = languages.get(name)
    lo, hi = {"flipflop": (2, 30), "anbncn": (3, 30), "aa_star": (2, 30)}.get(name, (2, 30))
    strings = lang.sample(7, lo, hi, seed=1)
    strings.append(strings[0][:-1] + strings[0][:1])  # a non-member too
    b = encode_batch(lang, strings)
    _check_batch(lang, strings, b)
    b2 = encode_batch(lang, strings, labels=False)
    assert b2.labels == {} and (b2.allowed == b.allowed).all()
    b3 = encode_batch(lang, strings, labels=[lang.state_variables[0]])
    assert list(b3.labels) == [lang.state_variables[0]]
    with pytest.raises(ValueError, match="no trace variables"):
        encode_batch(lang, strings, labels=["nonsense"])


def test_encode_batch_errors_and_iter():
    lang = languages.get("dyck1")
    with pytest.raises(ValueError, match=r"'x' at position 1"):
        encode_batch(lang, ["()", "(x)"])
    with pytest.raises(ValueError, match="lacks symbols"):
        encode_batch(lang, ["()"], Vocab("("))
    chunks = list(iter_batches(lang, ["()", "(())", "()()", ""], 3))
    assert [len(c) for c in chunks] == [3, 1]
    assert chunks[1].tokens.tolist() == [[1]] and chunks[1].allowed[0, 0].tolist() == [False, False, True, True, False]


def test_label_array():
    lang = languages.get("dyck", K=2, h=3)
    b = encode_batch(lang, ["()", "([])"])
    depth = b.label_array("depth")
    assert depth.shape == (2, 5)
    assert np.allclose(depth[0, :3], [0, 1, 0]) and np.isnan(depth[0, 3:]).all()
    anbn = languages.get("anbn")
    c = encode_batch(anbn, ["aabb"]).label_array("counter")
    assert c.shape == (1, 5, 1) and c[0, :, 0].tolist() == [0, 1, 2, 1, 0]


def _check_splits(lang, splits, bins):
    seen = {}
    for k, strings in splits.items():
        lo, hi = bins[k]
        assert len(strings) == len(set(strings))
        for s in strings:
            assert lo <= len(s) <= hi and lang.accepts(s)
            assert s not in seen, (s, k, seen.get(s))
            seen[s] = k


@pytest.mark.parametrize("name", ["parity", "dyck", "tomita5", "shuffle2", "boolean3"])
def test_make_splits_disjoint_and_deterministic(name):
    lang = languages.get(name)
    bins = {k: (lo, min(hi, 40 if name != "dyck" else 120)) for k, (lo, hi) in lang.default_bins.items()}
    bins = {k: (min(lo, hi), hi) for k, (lo, hi) in bins.items()}
    a = make_splits(lang, 300, 100, seed=4, bins=bins)
    assert list(a) == list(bins)
    assert len(a["train"]) == 300 and all(len(a[k]) == 100 for k in bins if k != "train")
    _check_splits(lang, a, bins)
    assert a == make_splits(lang, 300, 100, seed=4, bins=bins)
    assert a != make_splits(lang, 300, 100, seed=5, bins=bins)


def test_make_splits_defaults_small_languages():
    anbn = languages.get("anbn")
    # the paper's n windows [2, 100], [101, 200], [200, 300]: bin2 shares n = 200 with bin1 (drawn once)
    assert anbn.default_bins == {"train": (4, 200), "bin0": (4, 200), "bin1": (202, 400), "bin2": (400, 600)}
    assert anbn.default_sizes == {"train": 80, "bin0": 19, "bin1": 100, "bin2": 100}
    sp = make_splits(anbn, seed=0)
    assert {k: len(v) for k, v in sp.items()} == anbn.default_sizes
    _check_splits(anbn, sp, anbn.default_bins)
    assert len(set(sp["train"]) | set(sp["bin0"])) == 99  # n in [2, 100]
    with pytest.raises(ValueError, match="allow_fewer"):
        make_splits(anbn, 1000, 50, seed=0)
    few = make_splits(anbn, 1000, 50, seed=0, allow_fewer=True)
    _check_splits(anbn, few, anbn.default_bins)
    assert len(few["train"]) + len(few["bin0"]) == 99 and len(few["bin0"]) >= 1
    assert len(few["bin1"]) == len(few["bin2"]) == 50
    assert languages.get("tomita2").default_sizes == {"train": 40, "bin0": 10, "bin1": 25}
    assert languages.get("dyck").default_sizes == {"train": 10_000, "bin0": 2000, "bin1": 2000}
    assert languages.get("aa_star").default_sizes == {"train": 200, "bin0": 50, "bin1": 50}


def test_make_splits_custom_names_share_the_training_window():
    lang = languages.get("d2")
    bins = {"train": (2, 20), "dev": (2, 20), "bin0": (2, 20), "bin1": (21, 40)}
    sp = make_splits(lang, 100, 30, seed=1, bins=bins)
    _check_splits(lang, sp, bins)
    assert [len(sp[k]) for k in bins] == [100, 30, 30, 30]
    with pytest.raises(ValueError, match="no default bins"):
        make_splits(languages.DFA([0], "a", {(0, "a"): 0}, 0, [0]), 1, 1, seed=0)
