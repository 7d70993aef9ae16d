"""probe.attribution: integrated gradients on the embedding obey completeness and causality."""
from __future__ import annotations

import numpy as np
import torch

from hooks.mamba import HookedMamba, MambaConfig
from probe.attribution import attribute_prediction, format_attribution


def _model():
    torch.manual_seed(0)
    return HookedMamba(MambaConfig(d_model=16, n_layers=2, vocab_size=9, d_state=4)).eval()


def test_scores_add_up_to_the_prediction_change_and_respect_causality():
    model = _model()
    tokens = torch.tensor([1, 3, 4, 5, 3, 6, 7, 4, 3, 5])
    t = 5
    a = attribute_prediction(model, tokens, position=t, target_id=4, n_steps=128)
    assert a.scores.shape == (10,)
    # Completeness (Sundararajan et al.): the scores sum to f(input) - f(baseline).
    assert abs(a.scores.sum() - (a.prediction - a.baseline_prediction)) < 5e-3
    assert a.delta < 5e-3
    # A causal model's prediction at t cannot depend on later tokens.
    assert np.all(a.scores[t + 1:] == 0)
    # The prediction itself is the model's sigmoid probability at (t, target).
    with torch.no_grad():
        p = torch.sigmoid(model(tokens[None])[0, t, 4]).item()
    assert abs(a.prediction - p) < 1e-6
    assert "f(input)" in format_attribution(a)


def test_bad_arguments_are_named():
    model = _model()
    import pytest

    with pytest.raises(ValueError, match="position 20 outside"):
        attribute_prediction(model, torch.tensor([1, 3, 4]), position=20, target_id=3)
    with pytest.raises(ValueError, match="unknown baseline"):
        attribute_prediction(model, torch.tensor([1, 3, 4]), position=1, target_id=3, baseline="zeros")


def test_format_attribution_decodes_with_the_language_vocabulary():
    """Vocab.decode drops BOS, so the decoded string is one shorter than the tokens: every position
    must still get its own name (this raised IndexError), BOS under the vocabulary's name."""
    import re

    from languages.datasets import Vocab

    model = _model()
    vocab = Vocab("abcdef")
    tokens = torch.tensor([1, 3, 4, 5, 3, 6, 7, 4, 3, 5])
    a = attribute_prediction(model, tokens, position=5, target_id=4, n_steps=16)
    text = format_attribution(a, decode=vocab.decode, top=len(tokens))
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"pos\s+(\d+)\s+(\S+)", text)}
    assert len(rows) == len(tokens)
    assert rows == {i: vocab.itos[t] for i, t in enumerate(tokens.tolist())}
    assert rows[0] == "<bos>" and rows[1] == "a"
    # Any decode function (here: one that drops specials like Vocab.decode) works too.
    plain = format_attribution(a, decode=lambda ids: vocab.decode(ids), top=len(tokens))
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"pos\s+(\d+)\s+(\S+)", plain)}
    assert rows[0] == "<1>" and rows[2] == "b"
