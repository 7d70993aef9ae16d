"""What TransformerLens, pyvene and Hugging Face users expect of a model, shared by both families.

* :class:`LensInterop` (mixed into :class:`hooks.HookedMamba` and :class:`hooks.HookedTransformerLM`):
  ``model.device``; ``model.config`` (= ``cfg``, as pyvene and Hugging Face expect); ``model.cfg.device`` kept in step with the parameters (TransformerLens's patching
  functions allocate their result on it); ``to_tokens`` / ``to_string`` / ``to_str_tokens`` through the
  language's vocabulary (:class:`languages.datasets.Vocab`: BOS first, PAD right-padding), set with
  :meth:`LensInterop.set_vocab` or by ``trained_models.load``.
* :class:`SSMActivationCache`: TransformerLens's ``ActivationCache`` for :class:`hooks.HookedMamba`.
  Shorthand keys resolve to the Mamba hook names (``cache["ssm_state", 1]`` is
  ``blocks.1.mixer.hook_ssm_state``; ``cache["resid_pre", 0]``, ``cache["embed"]`` as usual);
  ``stack_activation``, ``accumulated_resid`` (``apply_ln`` applies the final RMSNorm),
  ``remove_batch_dim``, ``to``, ``keys`` work unchanged. Methods that decompose attention heads, MLP
  neurons or attention/MLP outputs raise :class:`NotImplementedError` saying that an SSM has none.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor
from transformer_lens import ActivationCache

from hooks.pyvene_compat import register_if_loaded
from languages.vocab import PAD_ID, Vocab

#: The mixer's hook names (``blocks.{l}.mixer.hook_<name>``) that shorthand keys resolve to.
MIXER_HOOKS = ("in_proj", "gate", "conv", "ssm_input", "delta", "B", "C", "a", "ssm_state", "ssm_state_flat", "y")
_ATTN_OR_MLP = {
    "attn", "attn_out", "mlp_out", "resid_mid", "pattern", "attn_scores", "q", "k", "v", "z", "result",
    "pre", "post", "mlp_in", "q_input", "k_input", "v_input", "attn_in", "rot_q", "rot_k",
}


def _vocab_of(obj: Any):
    if obj is None or isinstance(obj, Vocab):
        return obj
    return Vocab(obj)  # a Language or an alphabet


class LensInterop:
    """Mixin: device, ``cfg.device``, and the tokenizer-like methods (see the module docstring)."""

    vocab = None  # a languages.datasets.Vocab, set by set_vocab / trained_models.load

    @property
    def config(self):
        """The model's config under Hugging Face's / pyvene's attribute name (the same object as ``cfg``).
        Asking for it also registers the model with pyvene when pyvene is loaded (``hooks.pyvene_compat``)."""
        register_if_loaded(type(self))
        return self.cfg

    @property
    def device(self) -> torch.device:
        p = next(iter(self.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .float() ...: keep cfg.device in step
        out = super()._apply(fn, *args, **kwargs)
        if getattr(self, "cfg", None) is not None:
            self.cfg.device = self.device
        return out

    def set_vocab(self, vocab: Any) -> "LensInterop":
        """Attach the vocabulary (a ``Vocab``, a ``Language`` or an alphabet) used by ``to_tokens``."""
        vocab = _vocab_of(vocab)
        if vocab is not None and vocab.size > self.cfg.vocab_size:
            raise ValueError(f"vocabulary of {vocab.size} tokens does not fit the model's vocab_size {self.cfg.vocab_size}")
        self.vocab = vocab
        return self

    def _need_vocab(self, vocab: Any):
        vocab = _vocab_of(vocab) if vocab is not None else self.vocab
        if vocab is None:
            raise ValueError(
                f"{type(self).__name__} has no vocabulary: pass vocab= (a Vocab, Language or alphabet) or call "
                "model.set_vocab(languages.get(...)); trained_models.load sets it from the card"
            )
        return vocab

    def to_tokens(self, input: Union[str, Sequence[str]], prepend_bos: bool = True, vocab: Any = None) -> Tensor:
        """Strings to token ids ``[B, L]`` (int64, on the model's device): BOS first unless
        ``prepend_bos=False``, right-padded with PAD. A single string gives ``[1, L]``."""
        vocab = self._need_vocab(vocab)
        strings = [input] if isinstance(input, str) else list(input)
        tokens = torch.from_numpy(vocab.inputs(strings))
        if not prepend_bos:
            tokens = tokens[:, 1:]
        return tokens.to(self.device)

    def to_string(self, tokens: Union[Tensor, Iterable[int]], vocab: Any = None) -> Union[str, list[str]]:
        """Token ids back to strings (BOS, PAD and END dropped): ``[L]`` gives a str, ``[B, L]`` a list."""
        vocab = self._need_vocab(vocab)
        t = torch.as_tensor(tokens)
        if t.ndim == 2:
            return [vocab.decode(row.tolist()) for row in t]
        return vocab.decode(t.reshape(-1).tolist())

    def to_str_tokens(self, input: Union[str, Tensor], prepend_bos: bool = True, vocab: Any = None) -> list[str]:
        """One name per token (``<bos>``, ``<pad>``, END and the symbols) of one string or ``[L]`` ids."""
        vocab = self._need_vocab(vocab)
        ids = self.to_tokens(input, prepend_bos, vocab)[0] if isinstance(input, str) else torch.as_tensor(input)
        if ids.ndim != 1:
            raise ValueError(f"to_str_tokens takes one sequence, got shape {tuple(ids.shape)}")
        return [vocab.itos[i] for i in ids.tolist()]


class SSMActivationCache(ActivationCache):
    """``ActivationCache`` for :class:`hooks.HookedMamba` (see the module docstring)."""

    def __getitem__(self, key) -> Tensor:
        if isinstance(key, str) and key in self.cache_dict:
            return self.cache_dict[key]
        name, layer = (key, None) if isinstance(key, str) else (key[0], key[1] if len(key) > 1 else None)
        if isinstance(layer, int) and layer < 0:
            layer += self.model.cfg.n_layers
        if name in MIXER_HOOKS:
            full = f"blocks.{layer}.mixer.hook_{name}" if layer is not None else None
        elif name in _ATTN_OR_MLP or ".attn." in str(name) or "hook_attn" in str(name) or ".mlp." in str(name):
            raise KeyError(
                f"{key!r}: HookedMamba is a state space model; its blocks have one mixer and no attention "
                f"or MLP, so there is no such activation (mixer hooks: {', '.join(MIXER_HOOKS)})"
            )
        else:
            try:
                return super().__getitem__(key)
            except KeyError:
                full = None
        if full is None or full not in self.cache_dict:
            raise KeyError(f"{key!r} is not in this cache ({len(self.cache_dict)} names, e.g. "
                           f"{list(self.cache_dict)[:4]}); was it filtered out by names_filter?")
        return self.cache_dict[full]

    def accumulated_resid(self, layer=None, incl_mid=False, apply_ln=False, pos_slice=None, mlp_input=False,
                          return_labels=False):
        if incl_mid or mlp_input:
            raise NotImplementedError("HookedMamba blocks have no resid_mid (one mixer, no MLP): use incl_mid=False")
        return super().accumulated_resid(layer, False, apply_ln, pos_slice, False, return_labels)

    def apply_ln_to_stack(self, residual_stack, layer=None, mlp_input=False, pos_slice=None, batch_slice=None,
                          has_batch_dim=True, recompute_ln=False):
        """The final RMSNorm (``norm_f``) on every residual in the stack, statistics recomputed per entry
        (the logit-lens reading; Mamba blocks normalise with their own ``norm`` inside the mixer path)."""
        if mlp_input:
            raise NotImplementedError("HookedMamba blocks have no MLP input")
        return self.model.norm_f(residual_stack)

    def compute_ssm_effective_attention(self, *a, **k):
        raise NotImplementedError("compute_ssm_effective_attention reads TransformerBridge SSM mixers; for "
                                  "HookedMamba the states are cached directly: cache['ssm_state', l] [B, L, E, N]")

    def compute_ssm_state(self, *a, **k):
        raise NotImplementedError("HookedMamba caches its states directly: cache['ssm_state', l] is "
                                  "blocks.{l}.mixer.hook_ssm_state, [B, L, E, N]")


def _not_for_an_ssm(what: str):
    def method(self, *args, **kwargs):
        raise NotImplementedError(
            f"ActivationCache.{what} decomposes attention heads, MLP neurons or attention/MLP outputs; "
            "HookedMamba is a state space model with none of them. Use cache['ssm_state', l], "
            "cache.stack_activation('resid_post') or cache.accumulated_resid() instead."
        )

    method.__name__ = what
    return method


for _what in ("stack_head_results", "compute_head_results", "get_neuron_results", "stack_neuron_results",
              "decompose_resid", "get_full_resid_decomposition"):
    setattr(SSMActivationCache, _what, _not_for_an_ssm(_what))


def next_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """TransformerLens's ``return_type="loss"``: mean cross-entropy of ``tokens[:, 1:]`` given the
    logits at the positions before them, PAD targets ignored."""
    target = tokens[:, 1:].long().masked_fill(tokens[:, 1:] == PAD_ID, -100)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100
    )


__all__ = ["LensInterop", "SSMActivationCache", "MIXER_HOOKS", "next_token_loss"]
