"""Test-suite settings: one torch thread (the tests' tensors are small; threads only add overhead on
2 cores), offline Hugging Face, and a headless matplotlib backend."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
