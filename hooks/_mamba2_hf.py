"""Weight conversion between :class:`hooks.mamba2.HookedMamba2` and Hugging Face / mamba-ssm Mamba-2.

Names as for Mamba-1 (:mod:`hooks._mamba_hf`, whose renaming this reuses): ``embed.weight`` <->
``backbone.embeddings.weight`` (mamba-ssm: ``backbone.embedding.weight``), ``blocks.{l}.<p>`` <->
``backbone.layers.{l}.<p>``, ``norm_f.weight`` and ``lm_head.weight`` alike, with the mixer's ``<p>`` in
in_proj.{weight,bias}, conv1d.{weight,bias}, dt_bias, A_log, D, norm.weight, out_proj.{weight,bias}.
``n_groups`` cannot be read from the tensors' shapes (only ``n_groups * d_state`` can): it comes from
the HF config, or from ``overrides`` for a bare state dict (default 1).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from hooks._mamba_hf import _build, _load_hf, _read_common, _to_ours, _unpack

_MIXER2_PARAMS = {
    "in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D",
    "norm.weight", "out_proj.weight", "out_proj.bias",
}
_WHAT = "Mamba-2 (HF Mamba2ForCausalLM / mamba-ssm MambaLMHeadModel)"


def _infer_config(sd: Mapping[str, Tensor], n_groups: int) -> dict[str, Any]:
    for need in ("embed.weight", "blocks.0.mixer.in_proj.weight", "blocks.0.mixer.A_log", "blocks.0.mixer.conv1d.weight"):
        if need not in sd:
            raise ValueError(f"cannot infer the Mamba-2 config: checkpoint has no {need!r} (after renaming)")
    V, D = sd["embed.weight"].shape
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    H = sd["blocks.0.mixer.A_log"].shape[0]
    X, _, K = sd["blocks.0.mixer.conv1d.weight"].shape
    E = sd["blocks.0.mixer.in_proj.weight"].shape[0] - X - H
    if E <= 0 or E % H or E % D or (X - E) % (2 * n_groups):
        raise ValueError(f"checkpoint shapes do not form a Mamba-2 block (in_proj rows {E + X + H}, conv channels "
                         f"{X}, heads {H}, d_model {D}, n_groups {n_groups})")
    lm = sd.get("lm_head.weight")
    tie = lm is None or lm is sd["embed.weight"] or (lm.shape == sd["embed.weight"].shape and torch.equal(lm, sd["embed.weight"]))
    return dict(
        d_model=int(D), n_layers=n_layers, vocab_size=int(V), d_state=int((X - E) // (2 * n_groups)),
        d_conv=int(K), expand=int(E // D), headdim=int(E // H), n_groups=int(n_groups), tie_embeddings=bool(tie),
        bias="blocks.0.mixer.in_proj.bias" in sd, conv_bias="blocks.0.mixer.conv1d.bias" in sd,
    )


def from_hf(cls, obj: Any, **overrides: Any):
    raw, hf_cfg = _unpack(obj)
    sd = _to_ours(raw, _MIXER2_PARAMS, _WHAT)
    n_groups = overrides.pop("n_groups", getattr(hf_cfg, "n_groups", 1))
    fields = _infer_config(sd, int(n_groups))
    if hf_cfg is not None:
        _read_common(hf_cfg, sd, fields, "Mamba-2")
        fields["chunk_size"] = int(getattr(hf_cfg, "chunk_size", 64))
        lim = getattr(hf_cfg, "time_step_limit", None)
        if lim is not None and (float(lim[0]) > 0 or math.isfinite(float(lim[1]))):
            fields["dt_limit"] = (float(lim[0]), float(lim[1]))
    fields.update(overrides)
    return _build(cls, cls.config_class(**fields), sd)


def to_hf(model):
    from transformers import Mamba2Config as HFMamba2Config
    from transformers import Mamba2ForCausalLM

    cfg = model.cfg
    if cfg.gate != "nonnegative":
        raise ValueError(f"HF Mamba2ForCausalLM only has the nonnegative (Mamba-2) gate, this model has gate={cfg.gate!r}")
    hf_cfg = HFMamba2Config(
        num_heads=cfg.n_heads, head_dim=cfg.headdim, vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
        state_size=cfg.d_state, num_hidden_layers=cfg.n_layers, layer_norm_epsilon=cfg.norm_eps,
        expand=cfg.expand, conv_kernel=cfg.d_conv, n_groups=cfg.n_groups, use_bias=cfg.bias,
        use_conv_bias=cfg.conv_bias, chunk_size=cfg.chunk_size, tie_word_embeddings=cfg.tie_embeddings,
        time_step_min=cfg.dt_min, time_step_max=cfg.dt_max, time_step_floor=cfg.dt_init_floor,
        time_step_limit=tuple(cfg.dt_limit) if cfg.dt_limit is not None else (0.0, float("inf")),
        # rescale_prenorm_residual only shapes initialization, and HF 5.x applies it again to the weights
        # from_pretrained loads (dividing out_proj by sqrt(n_layers)): off, so that a saved copy reloads equal.
        residual_in_fp32=True, rescale_prenorm_residual=False,
    )
    return _load_hf(Mamba2ForCausalLM(hf_cfg), model)
