"""Steering depth by +1 along the depth probe's direction, read against the automaton.

For each string, at a position just after a closing bracket (so the counterfactual is "depth + 1,
the same per-depth memory"), add one unit of the layer-1 depth probe's readout to the state
(:func:`probe.subspace_edits.steer`) and check the prediction there against the automaton's:
``score="close"`` (default) asks whether the closing bracket of the memory block at depth + 1 now
wins by the close-accuracy criterion (p / sum p(closes) > 0.8; no set decoding, so allowed-set and
next-symbol models are scored alike); ``score="sets"`` compares the whole decoded allowed set.

::

    python -m analyses.dyck_steering --model dyck8-10-mamba-2l --model dyck8-10-mamba-1l

Beside the probe's direction, the same steering along the rank-1 direction that distributed alignment
search learns for depth in layer 1 (:func:`das_depth_direction`), by +1 and -1.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

import languages
from analyses.study import check_models
from hooks import constructions
from hooks.metrics import CLOSE_THRESHOLD, allowed_from_logits, close_ratio
from languages import cli
from languages.datasets import encode_batch
from languages.vocab import FIRST_OUTPUT_ID, Vocab
from probe import LinearProbe, collect
from probe.causal_models import DyckCausalModel
from probe.das import default_site
from probe.das_search import DASConfig, fit_das, prepare, probe_subspace, steering_direction
from probe.interchange import sample_pairs
from probe.subspace_edits import steer
from trained_models import load
from trained_models.build import MAMBA_FAMILIES


def steering_accuracy(model: torch.nn.Module, site: str, language: Any, strings: Sequence[str], *,
                      fit_n: int = 150, positions: int = 4000, seed: int = 3,
                      decode: str = "sigmoid", score: str = "close", direction: Optional[np.ndarray] = None,
                      amount: int = 1) -> dict[str, Any]:
    """Fraction of strings whose prediction after steering matches the automaton's at depth + ``amount``
    (``score``: "close" or "sets", see the module docstring); ``decode`` is the model card's.
    ``unchanged`` counts strings whose scored prediction (the winning close, or the set) did not move.

    ``direction``: a readout ``w`` with ``w . x`` = depth + const (e.g. the learned DAS direction
    scaled by :func:`probe.das_search.steering_direction`); default: the ridge depth probe's. ``amount`` +1
    or -1, at the middle one of the positions just after a closing bracket (for -1: of depth >= 2)."""
    if amount not in (1, -1):
        raise ValueError(f"amount must be +1 or -1, got {amount!r}")
    if score not in ("close", "sets"):
        raise ValueError(f"score must be 'close' or 'sets', got {score!r}")
    vocab = Vocab(language.alphabet)
    causal = DyckCausalModel(language)
    symbols = [languages.END] + list(language.alphabet)
    closes = [c for _, c in language.pairs]
    close_ids = [vocab.encode(c)[0] for c in closes]
    if direction is None:
        col = collect(model, language, {"n": fit_n, "min_len": 20, "max_len": 200, "seed": seed}, [site], ["depth"],
                      positions=positions)
        w = np.ravel(LinearProbe(kind="regression", alphas=(1.0, 10.0, 100.0)).fit(
            col.acts[site], col.labels["depth"], groups=col.seq_id).coef_)
    else:
        w = np.ravel(np.asarray(direction, dtype=np.float64))
    ok = n = unchanged = 0
    for s in strings:
        # Just after a closing bracket: no write is pending, so the memory block at the new depth is
        # what the automaton (and the construction) reads; -1 needs depth >= 2 there.
        cands = [t for t in range(1, len(s) + 1) if s[t - 1] in language.closes
                 and (amount == 1 or causal.state(s[:t])[0] >= 2)]
        if not cands:
            continue
        t = cands[len(cands) // 2]
        depth, memory = causal.state(s[:t])
        new = depth + amount
        if new > language.h or new not in memory:
            continue
        tokens = torch.as_tensor(encode_batch(language, [s], vocab).tokens)
        with torch.no_grad():
            before = model(tokens)[0, t]
            with steer(model, site, w, float(amount), positions=t):
                after = model(tokens)[0, t]
        want = language.allowed_next("".join(memory[d] for d in range(1, new + 1)))[-1]
        if score == "sets":
            sb = allowed_from_logits(before, decode=decode)[FIRST_OUTPUT_ID:]
            sa = allowed_from_logits(after, decode=decode)[FIRST_OUTPUT_ID:]
            ok += {symbols[i] for i in sa.nonzero().flatten().tolist()} == set(want)
            unchanged += bool((sb == sa).all())
        else:
            pb, pa = (close_ratio(x, close_ids, decode) for x in (before, after))
            right = [o for o, _ in language.pairs].index(memory[new])
            ok += bool(pa[right] > CLOSE_THRESHOLD)
            unchanged += int(pb.argmax()) == int(pa.argmax())
        n += 1
    return {"accuracy": ok / max(n, 1), "n": n, "unchanged": unchanged}


def das_depth_direction(model: torch.nn.Module, language: Any, *, layer: int = 0, decode: str = "sigmoid",
                        n_pairs: int = 160, steps: int = 30, seed: int = 0) -> tuple[str, np.ndarray]:
    """``(site, w)``: the rank-1 DAS direction for depth in ``layer``'s state (Transformer: residual
    stream), scaled so that ``w . x`` moves by one per unit of depth (:func:`probe.das_search.steering_direction`)."""
    site = default_site(model, (layer,))
    cfg = DASConfig(steps=steps, decode=decode, score="close", seed=seed)
    pairs = sample_pairs(language, n_pairs, 20, 120, seed=seed + 31)
    data = prepare(model, language, pairs, "depth", site, cfg)
    basis, _ = fit_das(model, language, data, 1, cfg, inits=[probe_subspace(data, language, "depth", 1, pad=True)])
    return site.hook_name(model), steering_direction(data, basis, language, "depth")


@cli.cli("python -m analyses.dyck_steering")
def main(argv: Optional[list[str]] = None) -> int:
    ap = cli.ArgumentParser(prog="python -m analyses.dyck_steering", description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=[], help="shipped name or run directory (repeatable)")
    ap.add_argument("--n", type=cli.positive_int, default=60)
    ap.add_argument("--seed", type=cli.nonnegative_int, default=21)
    args = ap.parse_args(argv)
    check_models(args.model)
    torch.set_num_threads(1)
    language = languages.get("dyck", K=8, h=10)
    strings = language.sample(args.n, 20, 120, seed=args.seed)
    subjects = [("construction", constructions.dyck(8, 10).model, "blocks.0.hook_ssm_state", "sigmoid")]
    for name in args.model:
        model, card = load(name)
        site = "blocks.0.mixer.hook_ssm_state" if card["model"]["family"] in MAMBA_FAMILIES else "blocks.0.hook_resid_post"
        subjects.append((name, model, site, card.get("decode", "sigmoid")))
    for name, model, site, decode in subjects:
        for amount in (1, -1):
            r = steering_accuracy(model, site, language, strings, decode=decode, amount=amount)
            print(f"{name}: steering depth {amount:+d} along the probe direction at {site} matches the automaton on "
                  f"{r['accuracy']:.2f} of {r['n']} strings; predictions unchanged on {r['unchanged']}")
        das_site, w = das_depth_direction(model, language, decode=decode)
        for amount in (1, -1):
            r = steering_accuracy(model, das_site, language, strings, decode=decode, amount=amount, direction=w)
            print(f"{name}: steering depth {amount:+d} along the DAS direction at {das_site} matches the automaton on "
                  f"{r['accuracy']:.2f} of {r['n']} strings; predictions unchanged on {r['unchanged']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
