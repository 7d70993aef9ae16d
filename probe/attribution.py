"""Attribution of one prediction to earlier tokens: captum's layer integrated gradients.

The attributed quantity is the sigmoid probability (the models' decoding, docs/interfaces.md) that
symbol ``target`` may follow the prefix read at model position ``position``; integrated gradients
(Sundararajan et al. 2017) run along the straight path from a baseline input's embedding to the
input's embedding at the model's ``hook_embed`` site, and the per-dimension attributions are summed
into one score per token. With the completeness axiom the scores add up to
``f(input) - f(baseline)`` (``delta`` reports the integration error).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from hooks.metrics import output_probs
from languages.vocab import BOS_ID, FIRST_OUTPUT_ID, PAD_ID


@dataclass
class Attribution:
    tokens: list[int]
    scores: np.ndarray  # [L]: one score per input position (BOS first)
    prediction: float  # f(input)
    baseline_prediction: float  # f(baseline)
    delta: float  # convergence error: sum(scores) - (f(input) - f(baseline))


def _embedding_layer(model: torch.nn.Module) -> torch.nn.Module:
    hp = getattr(model, "hook_embed", None)
    if isinstance(hp, torch.nn.Module):
        return hp
    raise ValueError(f"{type(model).__name__} has no hook_embed HookPoint to attribute through")


def attribute_prediction(model: torch.nn.Module, tokens: torch.Tensor, position: int, target_id: int, *,
                         baseline: str | torch.Tensor = "pad", n_steps: int = 64,
                         pad_id: int = PAD_ID, bos_id: int = BOS_ID, decode: str = "sigmoid") -> Attribution:
    """Layer integrated gradients of ``sigmoid(logit[position, target_id])`` on ``hook_embed``
    (``decode="softmax"``: of the next-symbol probability, for models trained with ``--loss lm``).

    ``tokens [L]`` or ``[1, L]`` (with BOS). Baselines: ``"pad"`` (every token but BOS replaced by
    PAD, the usual "absent input"), or an explicit token tensor of the same shape.
    """
    from captum.attr import LayerIntegratedGradients

    if target_id < FIRST_OUTPUT_ID:
        raise ValueError(f"target_id {target_id} is PAD or BOS, which are never predicted")

    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.shape[0] != 1:
        raise ValueError("attribute one string at a time (tokens of shape [L] or [1, L])")
    if not 0 <= position < tokens.shape[1]:
        raise ValueError(f"position {position} outside the input of length {tokens.shape[1]}")
    if isinstance(baseline, str):
        if baseline != "pad":
            raise ValueError(f"unknown baseline {baseline!r}; use 'pad' or a token tensor")
        base = torch.full_like(tokens, pad_id)
        base[:, 0] = tokens[:, 0]
    else:
        base = torch.as_tensor(baseline, dtype=torch.long).reshape(tokens.shape)

    def f(inp: torch.Tensor) -> torch.Tensor:
        out = model(inp)
        out = out[0] if isinstance(out, tuple) else out
        return output_probs(out[:, position], decode)[:, target_id - FIRST_OUTPUT_ID]

    was_training = model.training
    model.eval()
    try:
        lig = LayerIntegratedGradients(f, _embedding_layer(model))
        attr, delta = lig.attribute(tokens, baselines=base, n_steps=n_steps, return_convergence_delta=True)
        with torch.no_grad():
            pred = float(f(tokens)[0])
            base_pred = float(f(base)[0])
    finally:
        model.train(was_training)
    scores = attr.sum(-1)[0].detach().double().numpy()
    return Attribution(tokens=tokens[0].tolist(), scores=scores, prediction=pred,
                       baseline_prediction=base_pred, delta=float(delta.abs().max()))


def format_attribution(a: Attribution, decode: Optional[Any] = None, top: int = 8) -> str:
    """The ``top`` most influential tokens, e.g. for a notebook or a report."""
    order = np.argsort(-np.abs(a.scores))[:top]
    names = _token_names(a.tokens, decode)
    lines = [f"f(input)={a.prediction:.3f}  f(baseline)={a.baseline_prediction:.3f}  delta={a.delta:.2e}"]
    lines += [f"  pos {i:4d}  {names[i]!s:>5}  {a.scores[i]:+.4f}" for i in order]
    return "\n".join(lines)


def _token_names(tokens: list[int], decode: Optional[Any]) -> list[str]:
    """One printable name per token. ``decode`` maps ids to a string (e.g. ``Vocab.decode``, which
    drops BOS/PAD/END): tokens it drops are shown as ``<id>`` (or by the vocabulary's own name)."""
    if decode is None:
        return [str(t) for t in tokens]
    itos = getattr(getattr(decode, "__self__", None), "itos", None)  # a bound Vocab.decode
    if itos is not None and all(0 <= t < len(itos) for t in tokens):
        return [str(itos[t]) for t in tokens]
    whole = decode(tokens)
    if isinstance(whole, (str, list, tuple)) and len(whole) == len(tokens):
        return [str(x) for x in whole]
    return [str(decode([t])) or f"<{t}>" for t in tokens]
