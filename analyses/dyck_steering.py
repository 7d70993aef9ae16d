"""Steering depth by +1 along the depth probe's direction, read against the automaton.

For each string, at a position just after a closing bracket (so the counterfactual is "depth + 1,
the same per-depth memory"), add one unit of the layer-1 depth probe's readout to the state
(:func:`probe.interventions.steer`) and check the allowed-next set there against the automaton's.

::

    python -m analyses.dyck_steering --model dyck8-10-mamba-2l --model dyck8-10-mamba-1l
"""
from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

import numpy as np
import torch


def steering_accuracy(model: torch.nn.Module, site: str, language: Any, strings: Sequence[str], *,
                      fit_n: int = 150, positions: int = 4000, seed: int = 3,
                      decode: str = "sigmoid") -> dict[str, Any]:
    """Fraction of strings whose allowed set after steering equals the automaton's (depth + 1);
    ``decode`` turns outputs into sets (the model card's ``decode``)."""
    import languages
    from languages.datasets import Vocab, encode_batch
    from hooks.metrics import END_ID, allowed_from_logits
    from probe import LinearProbe, collect
    from probe.interventions import DyckCausalModel, steer

    vocab = Vocab(language.alphabet)
    causal = DyckCausalModel(language)
    symbols = [languages.END] + list(language.alphabet)
    col = collect(model, language, {"n": fit_n, "min_len": 20, "max_len": 200, "seed": seed}, [site], ["depth"],
                  positions=positions)
    w = np.ravel(LinearProbe(kind="regression", alphas=(1.0, 10.0, 100.0)).fit(col.acts[site], col.labels["depth"]).coef_)
    ok = n = unchanged = 0
    for s in strings:
        closes = [t for t in range(1, len(s) + 1) if s[t - 1] in language.closes]
        if not closes:
            continue
        t = closes[len(closes) // 2]
        depth, memory = causal.state(s[:t])
        if depth + 1 > language.h or (depth + 1) not in memory:
            continue
        tokens = torch.as_tensor(encode_batch(language, [s], vocab).tokens)
        with torch.no_grad():
            before = allowed_from_logits(model(tokens)[0, t], decode=decode)[END_ID:]
            with steer(model, site, w, 1.0, positions=t):
                after = allowed_from_logits(model(tokens)[0, t], decode=decode)[END_ID:]
        want = language.allowed_next("".join(memory[d] for d in range(1, depth + 2)))[-1]
        got = {symbols[i] for i in after.nonzero().flatten().tolist()}
        ok += got == set(want)
        unchanged += bool((before == after).all())
        n += 1
    return {"accuracy": ok / max(n, 1), "n": n, "unchanged": unchanged}


def main(argv: Optional[list[str]] = None) -> int:
    import languages
    from hooks import constructions
    from trained_models import load

    ap = argparse.ArgumentParser(prog="python -m analyses.dyck_steering", description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=[], help="shipped name or run directory (repeatable)")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=21)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    language = languages.get("dyck", K=8, h=10)
    strings = language.sample(args.n, 20, 120, seed=args.seed)
    subjects = [("construction", constructions.dyck(8, 10).model, "blocks.0.hook_ssm_state", "sigmoid")]
    for name in args.model:
        model, card = load(name)
        site = "blocks.0.mixer.hook_ssm_state" if card["model"]["family"] == "mamba" else "blocks.0.hook_resid_post"
        subjects.append((name, model, site, card.get("decode", "sigmoid")))
    for name, model, site, decode in subjects:
        r = steering_accuracy(model, site, language, strings, decode=decode)
        print(f"{name}: steering depth +1 at {site} matches the automaton on {r['accuracy']:.2f} of {r['n']} "
              f"strings; predictions unchanged on {r['unchanged']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
