"""``analyses.block_counter_errors``: errors at the positions the counts decide, checked with hand-built models
(one that tracks the block and counts nothing, one that reads the language's own allowed-next sets)."""
import pytest
import torch

import languages
from analyses import block_counter_errors as bce
from languages.vocab import BOS_ID, Vocab
from trained_models.train import main as train_main


def test_blocks_and_count_decided_by_hand():
    assert bce.blocks("aabbcc") == ("abc", 2) and bce.count_decided("aabbcc") == [4, 6]
    assert bce.count_decided("ab") == [2] and bce.count_decided("aaabbbcccddd") == [6, 9, 12]
    for bad in ("", "aab", "abab"):
        with pytest.raises(ValueError, match="equal blocks"):
            bce.blocks(bad)


class _Sets(torch.nn.Module):
    """Logits +10 on the symbols of ``sets(prefix)`` and -10 elsewhere, per position of the token ids."""

    def __init__(self, language, sets):
        super().__init__()
        self.vocab, self.sets = Vocab(language.alphabet), sets

    def forward(self, tokens):
        out = torch.full((*tokens.shape, self.vocab.size), -10.0)
        for b, row in enumerate(tokens.tolist()):
            prefix = ""
            for t, tok in enumerate(row):
                if t and tok == BOS_ID or tok == 0:
                    break
                if t:
                    prefix += self.vocab.itos[tok]
                for sym in self.sets(prefix):
                    out[b, t, self.vocab.itos.index(sym)] = 10.0
        return out


def _block_tracker(prefix):  # knows the current block, counts nothing
    if not prefix:
        return {"a"}
    return {"a", "b"} if prefix[-1] == "a" else {prefix[-1]}


@pytest.mark.parametrize("name", ["anbncn", "anbncndn"])
def test_a_model_that_counts_nothing_errs_exactly_where_the_counts_decide(name):
    lang = languages.get(name)
    k = len(lang.alphabet)
    strings = ["".join(c * n for c in lang.alphabet) for n in (1, 2, 5, 9)]
    res = bce.classify(strings, bce.predicted(_Sets(lang, _block_tracker), lang, strings, batch_size=3))
    assert res["decided"] == res["wrong_decided"] == (k - 1) * 4 and res["wrong_elsewhere"] == 0
    assert res["goes_on"] == res["wrong_decided"] and res["strict"] == 0.0
    assert res["positions"] == sum(len(s) + 1 for s in strings)
    assert res["predicted_there"] == {c: 4 for c in lang.alphabet[1:]}


def test_a_model_that_reads_the_allowed_sets_makes_no_error():
    lang = languages.get("anbncn")
    strings = ["abc", "aabbcc", "aaaabbbbcccc"]
    oracle = _Sets(lang, lambda prefix: lang.allowed_next(prefix)[-1])
    res = bce.classify(strings, bce.predicted(oracle, lang, strings))
    assert res["strict"] == 1.0 and res["wrong_decided"] == res["wrong_elsewhere"] == 0
    assert res["position_accuracy"] == 1.0


def test_the_command_on_a_trained_run_and_on_a_run_of_another_language(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["--layers", "1", "--d-model", "8", "--d-state", "4", "--n-train", "16", "--n-dev", "4", "--n-test", "4",
              "--batch-size", "8", "--epochs", "1", "--warmup-steps", "1", "--threads", "1", "--no-progress"]
    assert train_main(["--language", "anbn", *common, "--min-len", "2", "--max-len", "40", "--test-window",
                       "bin1=42:60", "--out", str(runs / "anbn-run")]) == 0
    out = tmp_path / "errors.md"
    assert bce.main(["--runs", str(runs), "--out", str(out)]) == 0
    text = out.read_text()
    assert "## anbn" in text and "| anbn-run | 16 |" in text
    other = tmp_path / "other"
    assert train_main(["--language", "d2", *common, "--min-len", "2", "--max-len", "12", "--test-window",
                       "bin1=14:20", "--out", str(other / "d2-run")]) == 0
    capsys.readouterr()
    assert bce.main(["--runs", str(other), "--out", str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err
    assert "a d2 run, not one of anbn, anbncn, anbncndn" in err and not (tmp_path / "x.md").exists()
