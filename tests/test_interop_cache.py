"""run_with_cache on both model families: the TransformerLens ActivationCache interface, and cached
``hook_ssm_state`` under an edit equal to the states the model actually carried (sequential loop)."""
from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache

from hooks import HookedMamba, MambaConfig, TransformerConfig, build_transformer
from tests.test_mamba_edits import TOKS, _model, loop_forward

NAME = "blocks.1.mixer.hook_ssm_state"


@pytest.mark.parametrize("mode", ["overwrite", "add"])
def test_cached_state_under_an_upstream_edit_is_the_carried_state(mode):
    """A hook zeroes h at position 4 of layer 1 (add: adds 1): the cache, and any later hook, see the
    states the recurrence carried after the edit, position by position equal to the sequential loop."""
    m = _model()
    t = 4

    def hook(h, hook):
        h = h.clone()
        h[:, t] = 0.0 if mode == "overwrite" else h[:, t] + 1.0
        return h

    seen = {}

    def later(h, hook):
        seen["h"] = h.detach().clone()

    record = {}
    ref_logits, _ = loop_forward(
        m, TOKS, edit=lambda l, s, h: (h * 0 if mode == "overwrite" else h + 1) if (l == 1 and s == t) else h,
        record=record,
    )
    with torch.no_grad(), m.state_edit_mode(mode):
        m.add_hook(NAME, hook)
        try:
            logits, cache = m.run_with_cache(TOKS, names_filter=lambda n: n.endswith("hook_ssm_state"))
            logits2 = m.run_with_hooks(TOKS, fwd_hooks=[(NAME, later)])
        finally:
            m.reset_hooks()
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits2, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache[NAME], record[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen["h"], record[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache["blocks.0.mixer.hook_ssm_state"], record[0], atol=1e-5, rtol=1e-5)
    assert float((cache[NAME][:, t + 1] - cache[NAME][:, t + 1].new_zeros(())).abs().max()) > 0


def test_a_hook_before_the_edit_sees_the_unedited_states():
    """Order matters as in TransformerLens: a cache registered before the editing hook records what
    the editing hook was given."""
    m = _model()
    record = {}
    loop_forward(m, TOKS, record=record)
    with torch.no_grad():
        logits, cache = m.run_with_cache(TOKS, names_filter=NAME)
        torch.testing.assert_close(cache[NAME], record[1], atol=1e-5, rtol=1e-5)
