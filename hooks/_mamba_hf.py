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

Files: :func:`save_pretrained` writes the Hugging Face layout (``config.json`` with
``model_type="mamba"`` + ``model.safetensors`` in HF naming, tied ``lm_head`` omitted as HF does), readable
by ``transformers.MambaForCausalLM.from_pretrained``; ``config.json`` also carries an ``automata_lens``
entry (our full config and the vocabulary's alphabet) that :func:`from_pretrained` restores.
:func:`from_pretrained` reads such a directory, any HF or mamba-ssm Mamba-1 directory
(``config.json`` + ``model.safetensors`` or sharded ``model.safetensors.index.json``), or a single
``.safetensors`` file (config inferred from shapes). Pickled ``.bin`` weights are refused. A hub id is
fetched only when the hub is allowed (``HF_HUB_OFFLINE`` unset) and reachable; otherwise the error
says so.

The loaders take the model class (``cls``) and build its config with ``cls.config_class``, so this
module needs nothing from :mod:`hooks.mamba` (which imports it).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Optional

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
    if isinstance(obj, (str, os.PathLike)):
        return from_pretrained(cls, obj, **overrides)
    raw, hf_cfg = _unpack(obj)
    sd = _to_ours(raw)
    fields = _infer_config(sd)
    if hf_cfg is not None:
        _read_common(hf_cfg, sd, fields, "Mamba")
        if getattr(hf_cfg, "rms_norm", True) is False:
            raise ValueError("only RMSNorm Mamba is supported (the mamba-ssm config has rms_norm=False)")
    fields.update(overrides)
    return _build(cls, cls.config_class(**fields), sd)


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


def _hf_config_kwargs(cfg) -> dict[str, Any]:
    """``transformers.MambaConfig`` keyword arguments for our config (nonnegative gate only)."""
    if cfg.gate != "nonnegative":
        raise ValueError(f"HF MambaForCausalLM only has the nonnegative (Mamba) gate, this model has gate={cfg.gate!r}")
    if cfg.d_inner % cfg.d_model:
        raise ValueError(f"HF MambaConfig needs an integer expand, got d_inner/d_model = {cfg.d_inner}/{cfg.d_model}")
    return dict(
        vocab_size=cfg.d_vocab, hidden_size=cfg.d_model, state_size=cfg.d_state,
        num_hidden_layers=cfg.n_layers, layer_norm_epsilon=cfg.norm_eps, expand=cfg.d_inner // cfg.d_model,
        conv_kernel=cfg.d_conv, use_bias=cfg.bias, use_conv_bias=cfg.conv_bias, time_step_rank=cfg.dt_rank,
        time_step_min=cfg.dt_min, time_step_max=cfg.dt_max, time_step_floor=cfg.dt_init_floor,
        time_step_scale=cfg.dt_scale, time_step_init_scheme=cfg.dt_init, tie_word_embeddings=cfg.tie_embeddings,
        residual_in_fp32=True, use_mambapy=False,
    )


def _hf_state_dict(model) -> dict[str, Tensor]:
    """Our state dict under HF ``MambaForCausalLM`` names (float32, detached)."""
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
    return {k: v.detach().float() for k, v in sd.items()}


def to_hf(model):
    from transformers import MambaConfig as HFMambaConfig
    from transformers import MambaForCausalLM

    return _load_hf(MambaForCausalLM(HFMambaConfig(**_hf_config_kwargs(model.cfg))), model)


def _load_hf(hf, model):
    """Copy ``model``'s weights into the HF model ``hf`` (our names -> HF's; Mamba-1 and Mamba-2 name
    their layers alike); float32, eval mode."""
    with torch.no_grad():
        hf.load_state_dict(_hf_state_dict(model), strict=True)
    return hf.float().eval()


# -- files -------------------------------------------------------------------------------------------

CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"


def save_pretrained(model, directory: Any) -> Path:
    """Write ``directory/config.json`` and ``directory/model.safetensors`` in the HF layout (module
    docstring). Both files are written to a temporary directory first and then moved in, so a kill
    leaves either the old files or the new ones."""
    from safetensors.torch import save_file

    cfg = model.cfg
    config = {"model_type": "mamba", "architectures": ["MambaForCausalLM"], **_hf_config_kwargs(cfg),
              "hidden_act": "silu", "automata_lens": {"mamba_config": cfg.to_dict()}}
    vocab = getattr(model, "vocab", None)
    if vocab is not None:
        config["automata_lens"]["alphabet"] = list(vocab.alphabet)
    sd = _hf_state_dict(model)
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)  # HF saves tied weights once
    sd = {k: v.contiguous() for k, v in sd.items()}
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"save_pretrained: {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-save-") as tmp:
        save_file(sd, os.path.join(tmp, WEIGHTS_FILE), metadata={"format": "pt"})
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            os.chmod(os.path.join(tmp, name), 0o644)
            os.replace(os.path.join(tmp, name), out / name)
    return out


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _resolve(path: Any) -> Path:
    p = Path(path).expanduser()
    if p.exists():
        return p
    name = str(path)
    looks_like_hub_id = bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not name.startswith((".", "/"))
    if not looks_like_hub_id:
        raise FileNotFoundError(f"from_pretrained: no such file or directory {name!r} (expected a Hugging Face "
                                "model directory, a .safetensors file, or a hub id 'owner/name')")
    if _offline():
        raise OSError(f"from_pretrained: {name!r} is not a local path, and HF_HUB_OFFLINE=1 (offline mode) forbids "
                      f"fetching it from the Hugging Face hub; download it where the hub is reachable "
                      f"(huggingface-cli download {name} --local-dir DIR) and pass DIR")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=[CONFIG_FILE, "*.safetensors", INDEX_FILE]))
    except Exception as e:  # network, missing repo, missing package: one clear line
        raise OSError(f"from_pretrained: could not fetch {name!r} from the Hugging Face hub ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); without network set HF_HUB_OFFLINE=1 "
                      "(offline mode) and pass a local directory") from None


def _read_weights(p: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if p.is_file():
        if p.suffix != ".safetensors":
            raise ValueError(f"from_pretrained: {p} is not a .safetensors file (pickled weights are not loaded)")
        return load_file(str(p))
    if (p / WEIGHTS_FILE).is_file():
        return load_file(str(p / WEIGHTS_FILE))
    if (p / INDEX_FILE).is_file():
        index = json.loads((p / INDEX_FILE).read_text())
        sd: dict[str, Tensor] = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            sd.update(load_file(str(p / shard)))
        return sd
    bins = sorted(x.name for x in p.glob("*.bin"))
    hint = f" (found {bins}: pickled weights are not loaded; convert them to safetensors)" if bins else ""
    raise FileNotFoundError(f"from_pretrained: {p} has no {WEIGHTS_FILE} or {INDEX_FILE}{hint}")


def from_pretrained(cls, path: Any, **overrides: Any):
    p = _resolve(path)
    config_path = (p if p.is_dir() else p.parent) / CONFIG_FILE
    config: Optional[dict[str, Any]] = None
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"from_pretrained: {config_path} is not valid JSON ({e})") from None
    sd = _read_weights(p)
    ours = (config or {}).get("automata_lens", {})
    if "mamba_config" in ours:
        fields = {k: v for k, v in ours["mamba_config"].items() if k not in cls.config_class._DERIVED}
        fields.update(overrides)
        model = cls(cls.config_class(**fields))
        renamed = _to_ours(sd)
        if model.cfg.tie_embeddings:
            renamed.pop("lm_head.weight", None)
        with torch.no_grad():
            model.load_state_dict({k: v.float() for k, v in renamed.items()}, strict=True)
    else:
        hf_cfg = None
        if config is not None:
            if config.get("model_type", "mamba") != "mamba":
                raise ValueError(f"from_pretrained: {config_path} describes model_type={config['model_type']!r}, "
                                 "not a Mamba-1 ('mamba') model")
            hf_cfg = SimpleNamespace(**{k: v for k, v in config.items() if not k.startswith("_")})
        model = from_hf(cls, _Loaded(sd, hf_cfg), **overrides)
    if ours.get("alphabet") and hasattr(model, "set_vocab"):
        model.set_vocab(ours["alphabet"])
    return model.eval()


class _Loaded:
    """A state dict plus the HF config attributes, in the shape :func:`from_hf` reads from a model."""

    def __init__(self, sd: dict[str, Tensor], config: Any):
        self._sd, self.config = sd, config

    def state_dict(self) -> dict[str, Tensor]:
        return self._sd
