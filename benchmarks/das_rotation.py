"""DAS rotation: the QR map against torch's Householder parametrisation, forward + backward of the basis.

::

    python -m benchmarks.das_rotation            # prints a table; --reps N

:class:`probe.das_search.RotatedSubspace` keeps ``basis [F, k]`` orthonormal. torch's
``parametrizations.orthogonal`` (``rotation="householder"``, the reference) multiplies by an ``[F, F]``
base and its backward is quadratic in F; the sign-fixed QR map (``rotation="qr"``, the default) costs
O(F k^2). One DAS step evaluates the basis once and back-propagates through it once, so this is the
per-step overhead of the rotation alone (the model's forward and backward come on top). Widths: a
1-layer HookedMamba state (64 x 16 = 1024), with its conv window (1216), both layers of a 2-layer one
with the conv windows (2432). Minimum over ``--reps`` timings, one thread; the machine's load is printed
(other processes slow both alike).
"""
from __future__ import annotations

import os
import time

import torch

from languages import cli
from probe.das_search import RotatedSubspace

SIZES = ((1024, 1), (1216, 8), (1216, 64), (2432, 8), (2432, 64))


def step_seconds(dim: int, rank: int, rotation: str, reps: int) -> float:
    """Minimum time of one ``basis`` evaluation and backward through it."""
    rot = RotatedSubspace(dim, rank, seed=0, rotation=rotation)
    weight = torch.randn(dim, rank, dtype=torch.float64)
    best = float("inf")
    for _ in range(reps + 1):  # the first call warms up
        t = time.perf_counter()
        (rot.basis * weight).sum().backward()
        best = min(best, time.perf_counter() - t)
    return best


@cli.cli("python -m benchmarks.das_rotation")
def main(argv: list[str] | None = None) -> int:
    ap = cli.ArgumentParser(prog="python -m benchmarks.das_rotation", description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=cli.positive_int, default=3, help="timings per size (the minimum is shown)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f}; one torch thread; minimum of {args.reps} runs")
    print("| F | k | qr (ms) | householder (ms) | householder / qr |")
    print("|---|---|---|---|---|")
    for dim, rank in SIZES:
        qr = step_seconds(dim, rank, "qr", args.reps)
        hh = step_seconds(dim, rank, "householder", args.reps)
        print(f"| {dim} | {rank} | {1e3 * qr:.2f} | {1e3 * hh:.1f} | {hh / qr:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
