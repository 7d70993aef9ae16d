"""PARITY: the signed-gate construction and the non-negative impossibility witness (Sarrof et al. 2024)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import Tensor

import languages
from hooks.constructions._core import Construction, assemble, column, empty_allowed, make_config
from languages.vocab import BOS_ID, END_ID, Vocab


def parity_signed(*, dtype: str = "float32") -> Construction:
    """PARITY with one signed-gate layer, exact at every length (gate -1 on '1'; Grazzi et al. 2025).

    State size 1: BOS writes 1 (gate 1, input 1 from h = 0); '1' flips the sign (gate -1, input 0);
    '0' and PAD keep it (gate 1, input 0). So ``h_t = (-1)^{#1 in s[:t]}``, exactly, at any length and
    precision. Readout (the membership language ``parity``): both symbols always allowed, END iff h > 0
    (an even number of 1s). Decoder ``parity``: #1 mod 2.
    """
    language = languages.get("parity")
    vocab = Vocab(language.alphabet)
    V = vocab.size
    zero, one = column(vocab, ["0", "1"])
    cfg = make_config(language, "parity_signed", [1], dtype)

    def a0(u: Tensor) -> Tensor:
        x = cfg.split(u)[0]
        return (1.0 - 2.0 * x[..., one])[..., None]

    def b0(u: Tensor) -> Tensor:
        x = cfg.split(u)[0]
        return x[..., BOS_ID][..., None]

    def parity(states) -> Tensor:
        return (states[0][..., 0] < 0).long()

    def readout(states) -> Tensor:
        out = empty_allowed(states[0], V)
        out[..., zero] = True
        out[..., one] = True
        out[..., END_ID] = states[0][..., 0] > 0
        return out

    model = assemble(cfg, [(a0, b0)], readout)
    return Construction("parity_signed", language, model, readout, {"parity": parity},
                        "parity: one signed-gate sign bit (1)")


# --------------------------------------------------------------------------------------------- witness
@dataclass
class LayerWitness:
    """One layer's state on BOS + token^T: ``constant_from`` is the first step t (tokens read) from which
    every coordinate equals its final value within tolerance, or None when there is no constant tail
    of at least ``min_tail`` steps. ``last_change`` is the largest step-to-step change over the last
    ``min_tail`` steps (0 for an exactly constant tail)."""

    hook: str
    size: int
    constant_from: Optional[int]
    last_change: float

    @property
    def constant(self) -> bool:
        return self.constant_from is not None


@dataclass
class WitnessResult:
    """The paper's impossibility argument observed: on 1^T a non-negative-gate model's states are
    monotone, hence eventually constant at finite precision, and so are its predictions -- which
    PARITY needs to alternate forever."""

    T: int
    token: str
    rtol: float
    min_tail: int
    layers: list[LayerWitness] = field(default_factory=list)
    logits_constant_from: Optional[int] = None

    @property
    def all_constant(self) -> bool:
        return bool(self.layers) and all(l.constant for l in self.layers)

    def __str__(self) -> str:
        lines = [f"witness on BOS + ({self.token}) x {self.T} (rtol {self.rtol:.1e}, tail >= {self.min_tail} steps)"]
        for l in self.layers:
            what = f"constant from step {l.constant_from}" if l.constant else "no constant tail"
            lines.append(f"  {l.hook} [{l.size}]: {what} (last change {l.last_change:.3g})")
        lo = self.logits_constant_from
        lines.append(f"  logits: {'constant from step ' + str(lo) if lo is not None else 'no constant tail'}")
        verdict = ("every layer is eventually constant: the model cannot track parity past that step"
                   if self.all_constant else
                   "some layer does not settle within T steps (a signed gate, or a counter that has not "
                   "yet reached the end of the float's range)")
        lines.append(f"  => {verdict}")
        return "\n".join(lines)


def _token_id(model: Any, token: Union[str, int]) -> tuple[int, str]:
    if isinstance(token, int):
        return token, f"id {token}"
    vocab = getattr(model, "vocab", None)
    cfg = getattr(model, "cfg", None)
    if vocab is None and cfg is not None:
        vocab = getattr(cfg, "vocab", None)
        if vocab is None and getattr(cfg, "alphabet", None) is not None:
            vocab = tuple(cfg.alphabet)
    if isinstance(vocab, (tuple, list, str)):
        vocab = Vocab(tuple(vocab))
    if vocab is None or not hasattr(vocab, "encode"):
        raise ValueError(f"cannot find a vocabulary on {type(model).__name__}: pass token as an int id")
    return vocab.encode(token)[0], token


def _constant_from(x: Tensor, rtol: float, min_tail: int) -> tuple[Optional[int], float]:
    """x [T+1, S] (float64). First t with |x_t' - x_T| <= tol for all t' >= t, tol per coordinate
    ``rtol * max(|x_T[i]|, |x_t'[i]|, max_j |x_T[j]|)`` (relative to the coordinate and to the layer's
    scale, so a coordinate decaying to 0 counts as settled once below float precision of the layer)."""
    T = x.shape[0] - 1
    final = x[-1]
    scale = final.abs().max()
    tol = rtol * torch.maximum(torch.maximum(final.abs(), x.abs()), scale.expand_as(final))
    off = ((x - final).abs() > tol).any(-1)  # [T+1]
    bad = off.nonzero()
    t_star = 0 if bad.numel() == 0 else int(bad[-1]) + 1
    tail = x[-(min_tail + 1):]
    last_change = float((tail[1:] - tail[:-1]).abs().max()) if tail.shape[0] > 1 else 0.0
    return (t_star if T - t_star >= min_tail else None), last_change


@torch.no_grad()
def parity_nonnegative_witness(
    model: Any,
    T: int = 2000,
    token: Union[str, int] = "1",
    *,
    rtol: Optional[float] = None,
    min_tail: Optional[int] = None,
) -> WitnessResult:
    """Run ``model`` (a :class:`Construction`, a HookedDiagonalSSM or a trained HookedMamba) on
    ``[BOS] + token * T`` and report, per layer (every hook whose name ends in ``hook_ssm_state``), the
    first step after which every state coordinate is constant to float precision (a non-negative SSM's
    coordinates are monotone on 1^T, so they settle).

    ``token``: a symbol of the model's vocabulary (found on ``model.vocab`` or ``model.cfg``) or an id.
    ``rtol``: relative tolerance (default 16 x the state dtype's machine epsilon). ``min_tail``: the
    shortest tail that counts as constant (default max(2, T // 10)).
    """
    if isinstance(model, Construction):
        model = model.model
    tid, tname = _token_id(model, token)
    min_tail = max(2, T // 10) if min_tail is None else min_tail
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tokens = torch.full((1, T + 1), tid, dtype=torch.long, device=device)
    tokens[0, 0] = BOS_ID
    names = [n for n in model.hook_dict if n.endswith("hook_ssm_state")]
    if not names:
        raise ValueError(f"{type(model).__name__} has no hook ending in 'hook_ssm_state'")
    out, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    logits = out[0] if isinstance(out, tuple) else out
    res = WitnessResult(T=T, token=tname, rtol=0.0, min_tail=min_tail)
    for n in names:
        s = cache[n][0]
        eps = torch.finfo(s.dtype).eps if s.is_floating_point() else 0.0
        tol = 16 * eps if rtol is None else rtol
        res.rtol = max(res.rtol, tol)
        t_star, last = _constant_from(s.reshape(T + 1, -1).double(), tol, min_tail)
        res.layers.append(LayerWitness(n, int(s[0].numel()), t_star, last))
    lg = logits[0].double()
    res.logits_constant_from, _ = _constant_from(lg, 16 * torch.finfo(logits.dtype).eps if rtol is None else rtol,
                                                 min_tail)
    return res
