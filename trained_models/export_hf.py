"""Export a shipped model or a run directory to the Hugging Face layout.

    python -m trained_models.export_hf parity-mamba-nonnegative outputs/parity-hf
    python -m trained_models.export_hf runs/my-run outputs/my-run-hf

writes ``config.json`` + ``model.safetensors`` that ``transformers.MambaForCausalLM.from_pretrained``
and ``hooks.HookedMamba.from_pretrained`` both load (the latter with the language's vocabulary, so
``model.to_tokens`` works). Mamba models with the nonnegative gate only: Hugging Face has no signed or
time-invariant Mamba, and no class for these Transformers (TransformerLens native blocks).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from trained_models.registry import load


def export_hf(name_or_dir: str, out: str | Path) -> Path:
    """Load ``name_or_dir`` with :func:`trained_models.registry.load` and ``save_pretrained`` it to ``out``."""
    model, card = load(name_or_dir)
    if not hasattr(model, "save_pretrained"):
        family = (card.get("model") or {}).get("family", type(model).__name__)
        raise ValueError(f"{name_or_dir}: a {family} model has no Hugging Face format here (Mamba models only)")
    return model.save_pretrained(out)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trained_models.export_hf", description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a shipped model's name or a run directory")
    ap.add_argument("out", help="output directory (created; config.json and model.safetensors are replaced)")
    args = ap.parse_args(argv)
    if not args.out.strip():
        ap.error("out must not be empty")
    try:
        path = export_hf(args.model, args.out)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}/config.json and {path}/model.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
