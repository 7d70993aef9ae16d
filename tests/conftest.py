"""Test-suite settings: one torch thread (the tests' tensors are small; threads only add overhead on
2 cores), offline Hugging Face, a headless matplotlib backend and derandomised Hypothesis."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from hypothesis import settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

# Property tests draw the same examples every run and keep no example database, so `make test` is
# reproducible and writes nothing into the checkout (no .hypothesis/ folder).
settings.register_profile("automata-lens", database=None, derandomize=True)
settings.load_profile("automata-lens")
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "automata-lens-hypothesis")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module, restored after it (studies under test may raise the count)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
