"""The theory's diagonal SSM (Sarrof et al. 2024) as a stacked, hook-instrumented model.

Glossary (shapes): B batch, L pos, V vocab size (``d_vocab``), D residual width (``d_resid``),
S_l state size of layer l (``d_state[l]``), Z_l output width of layer l (``d_out[l]``).

One layer maps its input stream u_1..u_L to outputs z_1..z_L::

    h_t = a(u_t) ∘ h_{t-1} + b(u_t),     h_0 = state-in (zeros by default),     z_t = φ(h_t, u_t)

``a`` (the diagonal gate), ``b`` (the input) and ``φ`` (the position-wise output map) are any torch
callables of the layer input: hand-set, non-learned functions for the paper's constructions
(:mod:`hooks.constructions`), or the learned defaults of :class:`DiagonalLayer` (a linear map through a
sigmoid / tanh / constant gate, a linear input map, φ = identity). A gate may be exactly 0, 1 or -1.

Residual stream. Layers talk through a stream of fixed width ``D = d_embed + Σ_l Z_l`` cut into
disjoint slices ``[embed | z_0 | z_1 | ...]`` (see :meth:`DiagonalSSMConfig.split`): the embedding
fills slice ``embed``; layer l reads the whole stream (its own and later slices are still zero) and
adds z_l into its own slice, which nothing else writes. So ``blocks.{l}.hook_resid_post`` holds the
embedding and every layer output up to l, concatenated, and a layer may read any earlier layer's output
and the token itself. The head maps the final stream to logits.

Hook points (names independent of length, as in HookedMamba)::

    hook_embed                     [B, L, d_embed]   token embedding (one-hot by default)
    blocks.{l}.hook_resid_pre      [B, L, D]
    blocks.{l}.hook_a              [B, L, S_l]       gate a(u_t)
    blocks.{l}.hook_b              [B, L, S_l]       input b(u_t)
    blocks.{l}.hook_ssm_state      [B, L, S_l]       h_t after token t
    blocks.{l}.hook_z              [B, L, Z_l]       output φ(h_t, u_t)
    blocks.{l}.hook_resid_post     [B, L, D]
    hook_norm_final                [B, L, D]         identity (no norm); present so code written for
                                                     HookedMamba finds the same name
    hook_logits                    [B, L, V]

Edits on ``hook_ssm_state`` are carried forward by the recurrence exactly as in
:class:`hooks.mamba.HookedMamba` (one implementation, :func:`hooks.scan.carry_state_edit`): the hook sees
the whole ``[B, L, S]`` tensor once (TransformerLens convention) and may return a new tensor or edit it
in place. With ``model.ssm_state_edit = "overwrite"`` (default; ``with model.state_edit_mode("add"):``
for the other) every coordinate ``(b, t, s)`` whose value the hook changed is an overwrite of
``h_t[s]`` in row b and everything after it follows the recurrence: the sequential loop that overwrites
each changed coordinate at its step (the reset gadget ``a = 0, b = value``). With ``"add"`` the
difference the hook made is added at its step and carried forward. A coordinate set to exactly its
pre-hook value counts as untouched. A caching hook stores the tensor it saw; everything downstream uses
the carried states. Gradients: when the hook returns a new tensor that requires grad, every position is
recomputed from it, so the gradient reaching the hook's output is the total derivative (as in
HookedMamba); values written in place are constants.

Recurrent state API (docs/interfaces.md): ``forward(tokens, state=None, return_state=False)``; a
:class:`DiagonalSSMState` holds per layer the last h_t in the field ``ssm`` (as HookedMamba's
LayerState; ``.h`` is an alias). Nothing else is carried: a, b and φ are position-wise. Running a
prefix, then the suffix (without BOS) from the returned state equals the whole run; swapping
``state.layers[l]`` between runs is the interchange intervention on layer l. The returned state is
the one after the last column, PAD columns included; the constructions make PAD a no-op (gate 1,
input 0), so for them it is the state after each row's last real token.

Scan. :func:`diagonal_scan` is a log-depth (Hillis-Steele) associative scan over the pairs (a, b); it
only multiplies gates with gates and states with gates and adds, so gates in {-1, 0, 1} and integer
inputs give exact integer counters (in float32 up to 2**24, float64 up to 2**53).
:func:`diagonal_scan_reference` is the obviously-correct sequential loop; the tests check they agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from hooks import scan as _scan
from hooks.state import LayeredState
from languages.vocab import Vocab

__all__ = [
    "DiagonalSSMConfig",
    "DiagonalLayer",
    "DiagonalLayerState",
    "DiagonalSSMState",
    "HookedDiagonalSSM",
    "diagonal_scan",
    "diagonal_scan_reference",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
GATES = _scan.GATES


# ----------------------------------------------------------------------------------------------- scan
def diagonal_scan_reference(
    a: Float[Tensor, "B L S"], b: Float[Tensor, "B L S"], h0: Optional[Float[Tensor, "B S"]] = None
) -> Float[Tensor, "B L S"]:
    """Sequential loop ``h_t = a_t * h_{t-1} + b_t`` from ``h0`` (zeros if None); returns all h_t."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    out = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    if not out:
        return b.new_zeros(b.shape)
    return torch.stack(out, dim=1)


def diagonal_scan(
    a: Float[Tensor, "B L S"], b: Float[Tensor, "B L S"], h0: Optional[Float[Tensor, "B S"]] = None
) -> Float[Tensor, "B L S"]:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` by a Hillis-Steele scan (log2 L vectorized steps).

    The combine of an earlier segment (A1, B1) with a later one (A2, B2) is (A2 A1, A2 B1 + B2); after
    step k every position holds the composition of the (up to) 2**k steps ending there. Out of place,
    so autograd works.
    """
    L = a.shape[1]
    if L == 0:
        return b.new_zeros(b.shape)
    if h0 is not None:
        b = torch.cat([(a[:, :1] * h0[:, None] + b[:, :1]), b[:, 1:]], dim=1)
    A, Bs = a, b
    d = 1
    while d < L:
        Bs = torch.cat([Bs[:, :d], A[:, d:] * Bs[:, :-d] + Bs[:, d:]], dim=1)
        if 2 * d < L:  # the gate products are needed only for a further step
            A = torch.cat([A[:, :d], A[:, d:] * A[:, :-d]], dim=1)
        d *= 2
    return Bs


_SCANS = {"doubling": diagonal_scan, "sequential": diagonal_scan_reference}


# --------------------------------------------------------------------------------------------- config
@dataclass
class DiagonalSSMConfig:
    """Shape and numerics of a :class:`HookedDiagonalSSM`.

    d_vocab: number of token ids (``Vocab(alphabet).size`` for the language models).
    d_state: per-layer state sizes S_l. d_out: per-layer output widths Z_l (default: = d_state, φ = id).
    d_embed: embedding width; None means the one-hot embedding of width d_vocab (no parameters).
    gate: gate family of the *learned default* layers: ``nonnegative`` (sigmoid, in (0, 1), Mamba's
    range), ``signed`` (tanh, in (-1, 1)) or ``time_invariant`` (a constant sigmoid per coordinate).
    dtype: ``float32`` or ``float64`` (counters that must stay exact at long lengths may want float64).
    alphabet: the language's symbols, so that ``model.vocab`` is ``languages.datasets.Vocab(alphabet)``.
    scan: ``doubling`` (default, :func:`diagonal_scan`) or ``sequential`` (the reference loop).
    """

    d_vocab: int
    d_state: Sequence[int]
    d_out: Optional[Sequence[int]] = None
    d_embed: Optional[int] = None
    gate: str = "nonnegative"
    dtype: str = "float32"
    alphabet: Optional[Sequence[str]] = None
    scan: str = "doubling"
    name: str = "diagonal_ssm"

    def __post_init__(self):
        self.d_state = tuple(int(s) for s in self.d_state)
        self.d_out = self.d_state if self.d_out is None else tuple(int(z) for z in self.d_out)
        if len(self.d_out) != len(self.d_state):
            raise ValueError(f"d_out has {len(self.d_out)} entries, d_state {len(self.d_state)}")
        if self.alphabet is not None:
            self.alphabet = tuple(self.alphabet)
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}")
        if self.scan not in _SCANS:
            raise ValueError(f"scan must be one of {tuple(_SCANS)}, got {self.scan!r}")

    def to_dict(self) -> dict:
        """JSON-able fields (what a model card stores)."""
        return {
            "d_vocab": self.d_vocab,
            "d_state": list(self.d_state),
            "d_out": list(self.d_out),
            "d_embed": self.d_embed,
            "gate": self.gate,
            "dtype": self.dtype,
            "alphabet": None if self.alphabet is None else list(self.alphabet),
            "scan": self.scan,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DiagonalSSMConfig":
        return cls(**d)

    @property
    def n_layers(self) -> int:
        return len(self.d_state)

    @property
    def width_embed(self) -> int:
        return self.d_vocab if self.d_embed is None else self.d_embed

    @property
    def d_resid(self) -> int:
        return self.width_embed + sum(self.d_out)

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def slices(self) -> list[slice]:
        """Residual slices: ``[embed, z_0, z_1, ...]``."""
        bounds = [0, self.width_embed]
        for z in self.d_out:
            bounds.append(bounds[-1] + z)
        return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def split(self, resid: Tensor) -> list[Tensor]:
        """Views of a residual stream ``[..., D]`` as ``[embed, z_0, z_1, ...]``."""
        return [resid[..., s] for s in self.slices()]


# ---------------------------------------------------------------------------------------------- state
@dataclass
class DiagonalLayerState:
    """What layer l carries between calls: its last state ``ssm`` = h_t, ``[B, S_l]`` (also ``.h``).
    The field name matches :class:`hooks.mamba.LayerState` (which also carries a conv window)."""

    ssm: Tensor

    @property
    def h(self) -> Tensor:
        return self.ssm

    def _map(self, fn) -> "DiagonalLayerState":
        return DiagonalLayerState(fn(self.ssm))

    def clone(self) -> "DiagonalLayerState":
        return self._map(lambda t: t.clone())


@dataclass
class DiagonalSSMState(LayeredState):
    """Per-layer recurrent state; swap ``layers[l]`` between runs for an interchange intervention.
    Same methods as :class:`hooks.mamba.MambaState` (both are :class:`hooks.state.LayeredState`)."""

    layers: list[DiagonalLayerState] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- layer
class _LearnedGate(nn.Module):
    def __init__(self, d_in: int, d_state: int, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "time_invariant":
            self.logit = nn.Parameter(torch.randn(d_state))
        else:
            self.proj = nn.Linear(d_in, d_state)

    def forward(self, u: Tensor) -> Tensor:
        if self.kind == "time_invariant":
            return torch.sigmoid(self.logit).expand(*u.shape[:-1], -1)
        pre = self.proj(u)
        return torch.sigmoid(pre) if self.kind == "nonnegative" else torch.tanh(pre)


class DiagonalLayer(nn.Module):
    """One layer ``h_t = a(u_t) ∘ h_{t-1} + b(u_t)``, ``z_t = φ(h_t, u_t)`` with its hook points.

    ``gate``: u [B, L, D] -> a [B, L, S]; ``inp``: u -> b [B, L, S]; ``out``: (h, u) -> z [B, L, Z]
    (None: z = h). Any of them None with ``d_in`` given builds the learned default.
    """

    def __init__(
        self,
        d_state: int,
        d_out: Optional[int] = None,
        gate: Optional[Callable[[Tensor], Tensor]] = None,
        inp: Optional[Callable[[Tensor], Tensor]] = None,
        out: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
        *,
        d_in: Optional[int] = None,
        gate_kind: str = "nonnegative",
        scan: str = "doubling",
    ):
        super().__init__()
        self.d_state = d_state
        self.d_out = d_state if d_out is None else d_out
        if (gate is None or inp is None) and d_in is None:
            raise ValueError("a learned default gate/input map needs d_in")
        self.gate = _LearnedGate(d_in, d_state, gate_kind) if gate is None else gate
        self.inp = nn.Linear(d_in, d_state, bias=False) if inp is None else inp
        if out is None and self.d_out != d_state:
            raise ValueError("φ = identity needs d_out == d_state")
        self.out = out
        self.scan = _SCANS[scan]
        self.hook_resid_pre = HookPoint()
        self.hook_a = HookPoint()
        self.hook_b = HookPoint()
        self.hook_ssm_state = HookPoint()
        self.hook_z = HookPoint()
        self.hook_resid_post = HookPoint()

    def states(self, u: Float[Tensor, "B L D"], h0: Float[Tensor, "B S"], edit_mode: str = "overwrite"
               ) -> Float[Tensor, "B L S"]:
        """All h_t for the input stream u from h0, with ``hook_ssm_state`` edits carried forward
        (:func:`hooks.scan.carry_state_edit`, as in HookedMamba; module docstring)."""
        a = self.hook_a(self.gate(u))
        b = self.hook_b(self.inp(u))
        H = self.scan(a, b, h0)
        hp = self.hook_ssm_state
        if not (hp._forward_hooks or hp.fwd_hooks):
            return hp(H)
        version = H._version
        return _scan.carry_state_edit(H, hp(H), version, h0, edit_mode, lambda t0: (a[:, t0:], b[:, t0:]),
                                      self.scan, recompute=lambda: self.scan(a, b, h0))

    def forward(self, u: Float[Tensor, "B L D"], h0: Float[Tensor, "B S"], edit_mode: str = "overwrite"
                ) -> tuple[Tensor, Tensor]:
        """(z [B, L, Z], h [B, L, S])."""
        H = self.states(u, h0, edit_mode)
        z = H if self.out is None else self.out(H, u)
        return self.hook_z(z), H


# ---------------------------------------------------------------------------------------------- model
class HookedDiagonalSSM(_scan.StateEditModes, HookedRootModule):
    """A stack of :class:`DiagonalLayer` over a residual stream; see the module docstring.

    ``layers``: one DiagonalLayer per layer (None: learned defaults from ``cfg``).
    ``embed``: tokens [B, L] -> [B, L, d_embed] (None: one-hot if ``cfg.d_embed`` is None, else an
    ``nn.Embedding``). ``head``: final stream [B, L, D] -> logits [B, L, V] (None: a linear map).
    """

    def __init__(
        self,
        cfg: DiagonalSSMConfig,
        layers: Optional[Sequence[DiagonalLayer]] = None,
        embed: Optional[Callable[[Tensor], Tensor]] = None,
        head: Optional[Callable[[Tensor], Tensor]] = None,
    ):
        super().__init__()
        self.cfg = cfg
        if layers is None:
            layers = [
                DiagonalLayer(s, d_in=cfg.d_resid, gate_kind=cfg.gate, scan=cfg.scan) for s in cfg.d_state
            ]
        layers = list(layers)
        if len(layers) != cfg.n_layers:
            raise ValueError(f"cfg has {cfg.n_layers} layers, got {len(layers)}")
        for l, (layer, s, z) in enumerate(zip(layers, cfg.d_state, cfg.d_out)):
            if (layer.d_state, layer.d_out) != (s, z):
                raise ValueError(f"layer {l}: sizes {(layer.d_state, layer.d_out)} != cfg {(s, z)}")
            layer.scan = _SCANS[cfg.scan]
        self.blocks = nn.ModuleList(layers)
        if embed is None and cfg.d_embed is not None:
            embed = nn.Embedding(cfg.d_vocab, cfg.d_embed)
        self.embed = embed
        self.head = nn.Linear(cfg.d_resid, cfg.d_vocab) if head is None else head
        self.hook_embed = HookPoint()
        self.hook_norm_final = HookPoint()
        self.hook_logits = HookPoint()
        self.to(cfg.torch_dtype)
        self.setup()

    @property
    def vocab(self):
        """``languages.datasets.Vocab(cfg.alphabet)`` (None when the config has no alphabet)."""
        if self.cfg.alphabet is None:
            return None

        return Vocab(self.cfg.alphabet)

    def init_state(self, batch_size: int, device=None, dtype=None) -> DiagonalSSMState:
        """The all-zero state (what a run without a state starts from)."""
        dt = dtype or self.cfg.torch_dtype
        batch = batch_size
        return DiagonalSSMState(
            [DiagonalLayerState(torch.zeros(batch, s, dtype=dt, device=device)) for s in self.cfg.d_state]
        )

    def forward(
        self,
        tokens: Int[Tensor, "B L"],
        state: Optional[DiagonalSSMState] = None,
        return_state: bool = False,
    ):
        tokens = torch.as_tensor(tokens).long()
        if tokens.dim() == 1:
            tokens = tokens[None]
        cfg, dt = self.cfg, self.cfg.torch_dtype
        Bn, L = tokens.shape
        if state is None:
            state = self.init_state(Bn, tokens.device)
        if len(state.layers) != cfg.n_layers:
            raise ValueError(f"state has {len(state.layers)} layers, model {cfg.n_layers}")
        for l, (ls, S) in enumerate(zip(state.layers, cfg.d_state)):
            if tuple(ls.ssm.shape) != (Bn, S):
                raise ValueError(f"state.layers[{l}].ssm is {tuple(ls.ssm.shape)}, expected {(Bn, S)}")
        _scan.check_edit_mode(self.ssm_state_edit)
        x = F.one_hot(tokens, cfg.d_vocab).to(dt) if self.embed is None else self.embed(tokens).to(dt)
        x = self.hook_embed(x)
        resid = torch.cat([x, x.new_zeros(Bn, L, sum(cfg.d_out))], dim=-1)
        sl = cfg.slices()
        new_layers = []
        for l, block in enumerate(self.blocks):
            resid = block.hook_resid_pre(resid)
            h0 = state.layers[l].ssm.to(dt)
            z, H = block(resid, h0, self.ssm_state_edit)
            lo, hi = sl[l + 1].start, sl[l + 1].stop
            resid = torch.cat([resid[..., :lo], resid[..., lo:hi] + z, resid[..., hi:]], dim=-1)
            resid = block.hook_resid_post(resid)
            new_layers.append(DiagonalLayerState(H[:, -1] if L > 0 else h0))
        resid = self.hook_norm_final(resid)
        logits = self.hook_logits(self.head(resid))
        if return_state:
            return logits, DiagonalSSMState(new_layers)
        return logits
