"""analyses.seed_spread: key numbers of a report and their spread over seeds, against hand values."""
from __future__ import annotations

import json

import pytest

from analyses import seed_spread


def _report(seed: int, close_in: float, probe: float, das: float, rank: int) -> dict:
    return {"settings": {"seed": seed}, "models": {"m": {
        "close_accuracy": {"in": close_in, "out": 0.5},
        "probes": [{"layer": 0, "site": "blocks.0.mixer.hook_ssm_state", "variable": "depth", "accuracy": probe,
                    "ood_accuracy": None, "accuracy_given_depth": None}],
        "iia": [{"layer": "all", "variable": "all", "iia": 0.9}],
        "das": [{"variable": "top", "layers": [2], "site": "L2 ssm", "rank": rank, "iia": das, "iia_ood": float("nan")}],
    }}}


def test_rows_hold_every_seed_the_mean_and_the_spread():
    rows = {r["key"]: r for r in seed_spread.spread_rows([_report(0, 0.9, 0.8, 0.7, 8), _report(1, 0.7, 0.8, 1.0, 48),
                                                         _report(2, 0.8, 0.8, 0.85, 8)])}
    r = rows["m | close accuracy in"]
    assert r["values"] == [0.9, 0.7, 0.8] and r["mean"] == pytest.approx(0.8) and r["spread"] == pytest.approx(0.2)
    assert rows["m | probe L1 ssm_state depth"]["spread"] == 0.0
    assert rows["m | whole-layer IIA Lall all"]["values"] == [0.9] * 3
    assert rows["m | DAS top L2 ssm best IIA"]["spread"] == pytest.approx(0.3)
    assert rows["m | DAS top L2 ssm best rank"]["values"] == [8, 48, 8]
    # None and NaN are not numbers: no row (the longer-string probe and DAS scores are missing here).
    assert "m | probe L1 ssm_state depth (longer)" not in rows and "m | DAS top L2 ssm best IIA (longer)" not in rows
    text = seed_spread.to_markdown(list(rows.values()), [0, 1, 2])
    assert "| * m \\| close accuracy in | 0.90 | 0.70 | 0.80 | 0.80 | 0.20 |" in text
    assert "| m \\| DAS top L2 ssm best rank |" in text  # ranks are never marked wide


def test_command_line_writes_the_table_and_refuses_bad_input(tmp_path, capsys):
    paths = []
    for seed, v in ((0, 0.9), (1, 0.8)):
        p = tmp_path / f"r{seed}.json"
        p.write_text(json.dumps(_report(seed, v, 0.8, 0.7, 8)))
        paths.append(str(p))
    out = tmp_path / "spread.md"
    assert seed_spread.main(paths + ["--out", str(out)]) == 0
    assert "over seeds 0, 1" in out.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for argv, message in (([paths[0]], "at least two"), ([paths[0], paths[0]], "share seeds"),
                          ([paths[0], str(bad)], "not a JSON report"), ([paths[0], str(tmp_path / "no.json")], "no such file")):
        assert seed_spread.main(argv) == 2
        assert message in capsys.readouterr().err
