"""Training, evaluation and the shipped trained models.

* ``python -m trained_models.train ...`` -- train a Mamba or Transformer on a language;
* ``python -m trained_models.evaluate ...`` -- strict / close accuracy, flip-flop read errors;
* :func:`load` / :func:`names` -- the shipped checkpoints (safetensors + JSON card).
"""
from trained_models.registry import load, load_any, names

__all__ = ["load", "load_any", "names"]
