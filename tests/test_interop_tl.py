"""TransformerLens users' calls on both model families as they are returned: the patching functions,
the ActivationCache interface, incl_bwd, clear errors for attention-only analyses, to_tokens."""
from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache, patching

import languages
from hooks import HookedMamba, MambaConfig, TransformerConfig, build_transformer
from hooks.interop import SSMActivationCache
from languages.datasets import encode_batch

G = torch.Generator().manual_seed(0)
CLEAN = torch.randint(1, 6, (3, 7), generator=G)
CORRUPT = torch.randint(1, 6, (3, 7), generator=G)


def _mamba():
    return HookedMamba(MambaConfig(d_model=8, n_layers=2, vocab_size=6, d_state=4), seed=0)


def _transformer():
    return build_transformer(TransformerConfig(d_model=8, n_layers=2, n_heads=2, vocab_size=6))


def metric(logits):
    return logits[:, -1, 3].mean() - logits[:, -1, 4].mean()


@pytest.mark.parametrize("make", [_mamba, _transformer], ids=["mamba", "transformer"])
def test_transformer_lens_resid_pre_patching_on_the_model_as_returned(make):
    """get_act_patch_resid_pre equals our own patch: clean resid_pre at (layer, pos) into the corrupted run."""
    model = make()
    _, clean_cache = model.run_with_cache(CLEAN)
    out = patching.get_act_patch_resid_pre(model, CORRUPT, clean_cache, metric)
    assert out.shape == (2, CLEAN.shape[1])
    ref = torch.zeros_like(out)
    for layer in range(2):
        name = f"blocks.{layer}.hook_resid_pre"
        clean = clean_cache[name]
        for pos in range(CLEAN.shape[1]):
            def hook(x, hook, pos=pos, clean=clean):
                x = x.clone()
                x[:, pos] = clean[:, pos]
                return x

            with torch.no_grad():
                ref[layer, pos] = metric(model.run_with_hooks(CORRUPT, fwd_hooks=[(name, hook)]))
    torch.testing.assert_close(out, ref)
    assert float(ref.abs().max()) > 0 and not model.training


def test_mamba_cache_is_an_activation_cache_with_mamba_shorthand():
    model = _mamba()
    logits, cache = model.run_with_cache(CLEAN)
    assert isinstance(cache, ActivationCache) and isinstance(cache, SSMActivationCache)
    assert cache["ssm_state", 1] is cache["blocks.1.mixer.hook_ssm_state"]
    assert cache["ssm_state", -1] is cache["blocks.1.mixer.hook_ssm_state"]
    assert cache["delta", 0] is cache["blocks.0.mixer.hook_delta"]
    assert cache["resid_pre", 0] is cache["blocks.0.hook_resid_pre"]
    assert cache["embed"] is cache["hook_embed"]
    stacked = cache.stack_activation("ssm_state")
    torch.testing.assert_close(stacked, torch.stack([cache[f"blocks.{l}.mixer.hook_ssm_state"] for l in range(2)]))
    acc, labels = cache.accumulated_resid(return_labels=True)
    assert labels == ["0_pre", "1_pre", "final_post"]
    torch.testing.assert_close(acc[-1], cache["blocks.1.hook_resid_post"])
    lens = cache.accumulated_resid(apply_ln=True)
    torch.testing.assert_close(lens[-1], cache["hook_norm_final"])  # logit lens at the end = the model's
    torch.testing.assert_close(lens[-1] @ model.lm_head.weight.T, logits)
    _, one = model.run_with_cache(CLEAN[:1], remove_batch_dim=True)
    assert one["ssm_state", 0].shape == cache["ssm_state", 0].shape[1:]
    torch.testing.assert_close(one["ssm_state", 0], cache["ssm_state", 0][0])
    # the same through remove_batch_dim() on a cache
    _, c1 = model.run_with_cache(CLEAN[:1])
    assert c1.remove_batch_dim()["resid_pre", 1].shape == (CLEAN.shape[1], 8)


@pytest.mark.parametrize("make", [_mamba, _transformer], ids=["mamba", "transformer"])
def test_incl_bwd_caches_the_gradient_of_the_loss(make):
    """dLoss/dlogits of the mean next-token cross-entropy is (softmax - onehot) / #targets."""
    model = make()
    loss, cache = model.run_with_cache(CLEAN, incl_bwd=True, return_type="loss")
    assert loss.ndim == 0
    with torch.no_grad():
        logits = model(CLEAN)
    p = torch.softmax(logits[:, :-1].double(), -1)
    onehot = torch.nn.functional.one_hot(CLEAN[:, 1:], logits.shape[-1]).double()
    want = torch.zeros_like(logits, dtype=torch.float64)
    want[:, :-1] = (p - onehot) / (CLEAN.shape[0] * (CLEAN.shape[1] - 1))
    torch.testing.assert_close(cache["hook_logits_grad"].double(), want, atol=1e-6, rtol=1e-4)
    assert cache["blocks.0.hook_resid_pre_grad"].shape == cache["blocks.0.hook_resid_pre"].shape


def test_incl_bwd_with_a_custom_scalar_and_a_clear_error_without_one():
    model = _mamba()
    out, cache = model.run_with_cache(CLEAN, incl_bwd=True, loss_fn=lambda lg: lg[:, -1, 3].sum())
    want = torch.zeros_like(out)
    want[:, -1, 3] = 1.0
    torch.testing.assert_close(cache["hook_logits_grad"], want)
    with pytest.raises(ValueError, match="return_type='loss'"):
        model.run_with_cache(CLEAN, incl_bwd=True)


def test_attention_only_analyses_say_an_ssm_has_no_attention():
    model = _mamba()
    _, cache = model.run_with_cache(CLEAN)
    for method in ("stack_head_results", "decompose_resid", "get_full_resid_decomposition",
                   "stack_neuron_results", "compute_head_results"):
        with pytest.raises(NotImplementedError, match="state space model"):
            getattr(cache, method)()
    with pytest.raises(KeyError, match="no attention"):
        cache["attn_out", 0]
    with pytest.raises(KeyError, match="no attention"):
        patching.get_act_patch_attn_out(model, CORRUPT, cache, metric)
    with pytest.raises(ValueError, match="state space model"):
        model.run_with_hooks(CLEAN, fwd_hooks=[("blocks.0.attn.hook_z", lambda x, hook: x)])


@pytest.mark.parametrize("make", [_mamba, _transformer], ids=["mamba", "transformer"])
def test_to_tokens_and_to_string_through_the_language_vocabulary(make):
    lang = languages.get("parity")
    model = make()
    with pytest.raises(ValueError, match="no vocabulary"):
        model.to_tokens("0110")
    model.set_vocab(lang)
    strings = ["0110", "1", "10101"]
    tokens = model.to_tokens(strings)
    assert torch.equal(tokens, torch.as_tensor(encode_batch(lang, strings, labels=False).tokens))
    assert model.to_string(tokens) == strings
    assert model.to_string(tokens[1]) == "1"
    assert model.to_tokens("01", prepend_bos=False).tolist() == [[3, 4]]
    assert model.to_str_tokens("01") == ["<bos>", "0", "1"]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        model.to_tokens("012")


def test_loaded_models_know_their_vocabulary():
    from trained_models.registry import load

    model, card = load("parity-mamba-nonnegative")
    assert model.to_string(model.to_tokens(["1101"])) == ["1101"]
    assert "".join(model.vocab.alphabet) == "".join(card["language"]["alphabet"])


def test_cfg_device_follows_the_model():
    model = _mamba()
    other = HookedMamba(model.cfg)
    model.to("meta")
    assert model.cfg.device == torch.device("meta") and model.device == torch.device("meta")
    assert other.cfg.device == torch.device("cpu")
