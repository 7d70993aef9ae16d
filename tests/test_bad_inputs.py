"""Every CLI over a table of bad arguments (``tests/bad_inputs.py``): exit code 2 and one line on stderr
naming the argument (or the damaged file), no traceback; bad API calls raise. In-process, fast."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bad_inputs  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    return bad_inputs.prepare(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize("case", bad_inputs.CASES, ids=lambda c: c.label[:90])
def test_bad_command_line_is_one_clear_line_with_exit_2(case, values):
    o = bad_inputs.run_case(case, values, timeout=60)
    assert o.kind == "clear", f"{o.kind}, rc={o.rc}: {o.message[-500:]}"


def test_every_cli_is_in_the_table():
    modules = {c.module for c in bad_inputs.CASES}
    assert modules >= {"trained_models.train", "trained_models.evaluate", "trained_models.suite",
                       "trained_models.recipes", "analyses.dyck_probe", "analyses.parity_probe",
                       "analyses.counter_probe", "analyses.flipflop_probe", "analyses.dyck_steering",
                       "hooks.constructions", "languages", "analyses.seed_spread", "benchmarks.das_rotation",
                       "analyses.tomita3_targets", "analyses.dn_depth"}


@pytest.mark.parametrize("label,call", bad_inputs._api_cases(), ids=[c[0] for c in bad_inputs._api_cases()])
def test_bad_api_call_raises(label, call):
    with pytest.raises(ValueError):
        call()


def test_debug_shows_the_traceback(values):
    from trained_models import evaluate

    with pytest.raises(ValueError, match="sha256"):
        evaluate.main(["--model", values["damaged:flipped_bytes"], "--n", "4", "--debug"])


def test_no_verify_loads_deliberately_edited_weights(values):
    import torch

    from trained_models import load

    model, _ = load(values["damaged:nan_weights"], verify=False)
    assert torch.isnan(model.state_dict()["embed.weight"][0, 0])
    with pytest.raises(ValueError, match="sha256"):
        load(values["damaged:nan_weights"])
