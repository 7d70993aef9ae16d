"""Steering depth by +1 along the depth probe's direction, read against the automaton.

For each string, at a position just after a closing bracket (so the counterfactual is "depth + 1,
the same per-depth memory"), add one unit of the layer-1 depth probe's readout to the state
(:func:`probe.interventions.steer`) and check the prediction there against the automaton's:
``score="close"`` (default) asks whether the closing bracket of the memory block at depth + 1 now
wins by the close-accuracy criterion (p / sum p(closes) > 0.8; no set decoding, so allowed-set and
next-symbol models are scored alike); ``score="sets"`` compares the whole decoded allowed set.

::

    python -m analyses.dyck_steering --model dyck8-10-mamba-2l --model dyck8-10-mamba-1l
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from languages import cli


def steering_accuracy(model: torch.nn.Module, site: str, language: Any, strings: Sequence[str], *,
                      fit_n: int = 150, positions: int = 4000, seed: int = 3,
                      decode: str = "sigmoid", score: str = "close") -> dict[str, Any]:
    """Fraction of strings whose prediction after steering matches the automaton's at depth + 1
    (``score``: "close" or "sets", see the module docstring); ``decode`` is the model card's.
    ``unchanged`` counts strings whose scored prediction (the winning close, or the set) did not move."""
    if score not in ("close", "sets"):
        raise ValueError(f"score must be 'close' or 'sets', got {score!r}")
    import languages
    from languages.datasets import Vocab, encode_batch
    from hooks.metrics import CLOSE_THRESHOLD, END_ID, allowed_from_logits, output_probs
    from probe import LinearProbe, collect
    from probe.interventions import DyckCausalModel, steer

    vocab = Vocab(language.alphabet)
    causal = DyckCausalModel(language)
    symbols = [languages.END] + list(language.alphabet)
    closes = [c for _, c in language.pairs]
    close_cols = [symbols.index(c) for c in closes]
    col = collect(model, language, {"n": fit_n, "min_len": 20, "max_len": 200, "seed": seed}, [site], ["depth"],
                  positions=positions)
    w = np.ravel(LinearProbe(kind="regression", alphas=(1.0, 10.0, 100.0)).fit(
        col.acts[site], col.labels["depth"], groups=col.seq_id).coef_)
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
            before = model(tokens)[0, t]
            with steer(model, site, w, 1.0, positions=t):
                after = model(tokens)[0, t]
        want = language.allowed_next("".join(memory[d] for d in range(1, depth + 2)))[-1]
        if score == "sets":
            sb = allowed_from_logits(before, decode=decode)[END_ID:]
            sa = allowed_from_logits(after, decode=decode)[END_ID:]
            ok += {symbols[i] for i in sa.nonzero().flatten().tolist()} == set(want)
            unchanged += bool((sb == sa).all())
        else:
            pb, pa = (output_probs(x, decode)[close_cols].double() for x in (before, after))
            right = [o for o, _ in language.pairs].index(memory[depth + 1])
            ok += bool(pa[right] / pa.sum() > CLOSE_THRESHOLD)
            unchanged += int(pb.argmax()) == int(pa.argmax())
        n += 1
    return {"accuracy": ok / max(n, 1), "n": n, "unchanged": unchanged}


@cli.cli("python -m analyses.dyck_steering")
def main(argv: Optional[list[str]] = None) -> int:
    import languages
    from analyses.common import check_models
    from hooks import constructions
    from trained_models import load
    from trained_models.build import MAMBA_FAMILIES

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
        r = steering_accuracy(model, site, language, strings, decode=decode)
        print(f"{name}: steering depth +1 at {site} matches the automaton on {r['accuracy']:.2f} of {r['n']} "
              f"strings; predictions unchanged on {r['unchanged']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
