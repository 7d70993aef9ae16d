"""pyvene on the models as they are (no registration, config or device shims by the user): a
VanillaIntervention at one position equals our own swap of the same activation."""
from __future__ import annotations

import pytest
import torch

pv = pytest.importorskip("pyvene")

from hooks import HookedMamba, MambaConfig, TransformerConfig, build_transformer  # noqa: E402

G = torch.Generator().manual_seed(0)
BASE = torch.randint(1, 6, (2, 9), generator=G)
SOURCE = torch.randint(1, 6, (2, 9), generator=G)
POS = 4


def _pyvene(model, layer, component):
    config = pv.IntervenableConfig(
        representations=[pv.RepresentationConfig(layer, component, "pos", 1)],
        intervention_types=pv.VanillaIntervention,
    )
    im = pv.IntervenableModel(config, model)
    loc = [[[POS]] * BASE.shape[0]]
    _, out = im({"tokens": BASE}, [{"tokens": SOURCE}], {"sources->base": (loc, loc)})
    return out


def _our_swap(model, name):
    with torch.no_grad():
        _, cache = model.run_with_cache(SOURCE, names_filter=name)

    def swap(x, hook):
        x = x.clone()
        x[:, POS] = cache[name][:, POS]
        return x

    with torch.no_grad():
        return model.run_with_hooks(BASE, fwd_hooks=[(name, swap)])


def test_vanilla_intervention_on_the_mamba_state_at_a_position():
    model = HookedMamba(MambaConfig(d_model=8, n_layers=2, vocab_size=6, d_state=4), seed=0)
    out = _pyvene(model, 1, "ssm_state")
    ours = _our_swap(model, "blocks.1.mixer.hook_ssm_state")
    torch.testing.assert_close(out, ours, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        plain = model(BASE)
    assert float((out - plain)[:, POS:].abs().max()) > 1e-4  # the swap changed the prediction ...
    torch.testing.assert_close(out[:, :POS], plain[:, :POS])  # ... and nothing before it
    # The state API's interchange: base prefix, layer 1's state from the source at POS, base suffix.
    with torch.no_grad():
        _, st = model(BASE[:, : POS + 1], return_state=True)
        _, src = model(SOURCE[:, : POS + 1], return_state=True)
        st.layers[1].ssm = src.layers[1].ssm
        tail = model(BASE[:, POS + 1 :], st)
    torch.testing.assert_close(out[:, POS + 1 :], tail, atol=1e-5, rtol=1e-5)


def test_vanilla_intervention_on_the_transformer_residual_at_a_position():
    model = build_transformer(TransformerConfig(d_model=8, n_layers=2, n_heads=2, vocab_size=6))
    out = _pyvene(model, 0, "block_output")
    ours = _our_swap(model, "blocks.0.hook_resid_post")
    torch.testing.assert_close(out, ours, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert float((out - model(BASE)).abs().max()) > 1e-4
