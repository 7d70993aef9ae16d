"""Weight conversion between :class:`hooks.mamba.HookedMamba` and Hugging Face / mamba-ssm Mamba-1.

Naming (all three share the mixer's parameter names)::

    ours                          HF MambaForCausalLM                 mamba-ssm MambaLMHeadModel
    embed.weight                  backbone.embeddings.weight          backbone.embedding.weight
    blocks.{l}.norm.weight        backbone.layers.{l}.norm.weight     (same as HF)
    blocks.{l}.mixer.<p>          backbone.layers.{l}.mixer.<p>       (same as HF)
    norm_f.weight                 backbone.norm_f.weight              (same as HF)
    lm_head.weight                lm_head.weight                      lm_head.weight

with ``<p>`` in in_proj.{weight,bias}, conv1d.{weight,bias}, x_proj.weight, dt_proj.{weight,bias},
A_log, D, out_proj.{weight,bias}. HF's ``residual_in_fp32`` only matters below float32 (the residual
stream here is kept in the parameters' dtype); ``rescale_prenorm_residual`` only affects initialization.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from torch import Tensor

_MIXER_PARAMS = {
    "in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "x_proj.weight",
    "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight", "out_proj.bias",
}
_LAYER = re.compile(r"^layers\.(\d+)\.(norm\.weight|mixer\.(.+))$")


def _to_ours(sd: Mapping[str, Tensor], mixer_params=_MIXER_PARAMS,
             what: str = "Mamba-1 (HF MambaForCausalLM / mamba-ssm MambaLMHeadModel)") -> dict[str, Tensor]:
    """HF / mamba-ssm names -> ours (``mixer_params``: the mixer's parameter names; ``what`` for errors)."""
    out, unknown = {}, []
    for key, value in sd.items():
        k = key[len("backbone."):] if key.startswith("backbone.") else key
        if k in ("embeddings.weight", "embedding.weight"):
            out["embed.weight"] = value
        elif k in ("norm_f.weight", "lm_head.weight"):
            out[k] = value
        elif (m := _LAYER.match(k)) and (m.group(3) is None or m.group(3) in mixer_params):
            out[f"blocks.{m.group(1)}.{m.group(2)}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"not a {what} checkpoint: unknown keys {unknown[:8]}"
            + (" ..." if len(unknown) > 8 else "")
        )
    return out


def _infer_config(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    for need in ("embed.weight", "blocks.0.mixer.in_proj.weight", "blocks.0.mixer.A_log"):
        if need not in sd:
            raise ValueError(f"cannot infer the config: checkpoint has no {need!r} (after renaming)")
    V, D = sd["embed.weight"].shape
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    E = sd["blocks.0.mixer.in_proj.weight"].shape[0] // 2
    E_, N = sd["blocks.0.mixer.A_log"].shape
    K = sd["blocks.0.mixer.conv1d.weight"].shape[-1]
    R = sd["blocks.0.mixer.dt_proj.weight"].shape[1]
    lm = sd.get("lm_head.weight")
    tie = lm is None or lm is sd["embed.weight"] or (lm.shape == sd["embed.weight"].shape and torch.equal(lm, sd["embed.weight"]))
    return dict(
        d_model=int(D), n_layers=n_layers, vocab_size=int(V), d_state=int(N), d_conv=int(K),
        expand=E // D if E % D == 0 else E / D, dt_rank=int(R), tie_embeddings=bool(tie),
        bias="blocks.0.mixer.in_proj.bias" in sd, conv_bias="blocks.0.mixer.conv1d.bias" in sd,
    )


def from_hf(cls, obj: Any, **overrides: Any):
    from hooks.mamba import MambaConfig

    raw, hf_cfg = _unpack(obj)
    sd = _to_ours(raw)
    fields = _infer_config(sd)
    if hf_cfg is not None:
        _read_common(hf_cfg, sd, fields, "Mamba")
        if getattr(hf_cfg, "rms_norm", True) is False:
            raise ValueError("only RMSNorm Mamba is supported (the mamba-ssm config has rms_norm=False)")
    fields.update(overrides)
    return _build(cls, MambaConfig(**fields), sd)


def _unpack(obj: Any) -> tuple[Mapping[str, Tensor], Any]:
    """``(state dict, HF config or None)`` of a model or a bare state dict."""
    if isinstance(obj, Mapping):
        return obj, None
    if hasattr(obj, "state_dict"):
        return obj.state_dict(), getattr(obj, "config", None)
    raise TypeError(f"from_hf expects a model or a state dict, got {type(obj).__name__}")


def _read_common(hf_cfg: Any, sd: Mapping[str, Tensor], fields: dict[str, Any], what: str) -> None:
    """Fields every HF Mamba config gives alike: the activation (SiLU only), norm eps, tied head."""
    act = getattr(hf_cfg, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"only SiLU {what} is supported, the HF config has hidden_act={act!r}")
    eps = getattr(hf_cfg, "layer_norm_epsilon", None)
    if eps is not None:
        fields["norm_eps"] = float(eps)
    if hasattr(hf_cfg, "tie_word_embeddings") and "lm_head.weight" in sd:
        fields["tie_embeddings"] = bool(hf_cfg.tie_word_embeddings) and fields["tie_embeddings"]


def _build(cls, config, sd: dict[str, Tensor]):
    """``cls(config)`` with the (renamed) weights ``sd`` loaded strictly, in float32."""
    model = cls(config)
    if model.cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    with torch.no_grad():
        model.load_state_dict({k: v.detach().float() for k, v in sd.items()}, strict=True)
    return model


def to_hf(model):
    from transformers import MambaConfig as HFMambaConfig
    from transformers import MambaForCausalLM

    cfg = model.cfg
    if cfg.gate != "nonnegative":
        raise ValueError(f"HF MambaForCausalLM only has the nonnegative (Mamba) gate, this model has gate={cfg.gate!r}")
    if cfg.d_inner % cfg.d_model:
        raise ValueError(f"HF MambaConfig needs an integer expand, got d_inner/d_model = {cfg.d_inner}/{cfg.d_model}")
    hf_cfg = HFMambaConfig(
        vocab_size=cfg.d_vocab, hidden_size=cfg.d_model, state_size=cfg.d_state,
        num_hidden_layers=cfg.n_layers, layer_norm_epsilon=cfg.norm_eps, expand=cfg.d_inner // cfg.d_model,
        conv_kernel=cfg.d_conv, use_bias=cfg.bias, use_conv_bias=cfg.conv_bias, time_step_rank=cfg.dt_rank,
        time_step_min=cfg.dt_min, time_step_max=cfg.dt_max, time_step_floor=cfg.dt_init_floor,
        time_step_scale=cfg.dt_scale, time_step_init_scheme=cfg.dt_init, tie_word_embeddings=cfg.tie_embeddings,
        residual_in_fp32=True, use_mambapy=False,
    )
    return _load_hf(MambaForCausalLM(hf_cfg), model)


def _load_hf(hf, model):
    """Copy ``model``'s weights into the HF model ``hf`` (our names -> HF's); float32, eval mode."""
    sd = {}
    for k, v in model.state_dict().items():
        if k == "embed.weight":
            sd["backbone.embeddings.weight"] = v
        elif k == "lm_head.weight":
            sd[k] = v
        elif k == "norm_f.weight":
            sd["backbone.norm_f.weight"] = v
        else:
            sd["backbone.layers." + k[len("blocks."):]] = v
    with torch.no_grad():
        hf.load_state_dict({k: v.detach().float() for k, v in sd.items()}, strict=True)
    return hf.float().eval()
