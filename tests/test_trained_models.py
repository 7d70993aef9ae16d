"""Training, evaluation metrics, checkpoints and the registry.

Metrics (their one home, hooks.metrics, is tested in test_metrics.py) are checked end to end against the
same plain-Python recomputation from ``Language.allowed_next``; training is
exercised on tiny budgets (a full run is a shipped model's job, not a test's).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import languages
from languages.datasets import Vocab, encode_batch
from trained_models.checkpoint import CheckpointMismatch, load_weights, save_model
from trained_models.config import TrainConfig
from trained_models.evaluate import TorchBatch, evaluate_strings
from trained_models.training import train


@pytest.mark.parametrize("name,params,decode", [("dyck", {"K": 2, "h": 3}, "softmax"), ("flipflop", {}, "sigmoid")])
def test_evaluate_strings_pools_batches_as_one_loop_over_the_strings(name, params, decode):
    """``evaluate_strings`` (sorted, padded, batched) scores a random model as the reference loop of
    ``tests/test_metrics.py`` does on each string's own logits."""
    from _metric_reference import reference_metrics
    from trained_models.build import build_model, model_spec

    language = languages.get(name, **params)
    torch.manual_seed(0)
    model = build_model(model_spec(_tiny_cfg(language=name, language_params=params), Vocab(language).size,
                                   language)).eval()
    strings = language.sample(12, 6, 20, seed=1)
    res = evaluate_strings(model, language, strings, decode=decode, batch_size=5)
    with torch.no_grad():
        logits = model(torch.as_tensor(encode_batch(language, strings).tokens))
    ref = reference_metrics(language, strings, logits, decode)
    assert {k: res[k] for k in ref} == pytest.approx(ref)


def test_config_rejects_impossible_values():
    with pytest.raises(ValueError, match="layers"):
        TrainConfig(language="dyck1", layers=0)
    with pytest.raises(ValueError, match="model"):
        TrainConfig(language="dyck1", model="rnn")
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"language": "dyck1", "depth": 3})


def _tiny_cfg(**kw):
    base = dict(language="dyck", language_params={"K": 2, "h": 3}, model="mamba", layers=1, d_model=8,
                d_state=4, expand=2, n_train=64, n_dev=16, n_test=16, batch_size=16, epochs=2,
                train_window=(2, 16), test_windows={"bin0": (2, 16), "bin1": (18, 30)}, warmup_steps=2,
                lr=3e-3, threads=1, patience=100)
    base.update(kw)
    return TrainConfig(**base)


def test_training_writes_a_loadable_card_and_is_deterministic(tmp_path):
    cfg = _tiny_cfg()
    card_a = train(cfg, tmp_path / "a", progress=False, command="test")
    card_b = train(cfg, tmp_path / "b", progress=False, command="test")
    for key in ("language", "model", "seed", "train_command", "train_seconds", "metrics", "decode"):
        assert key in card_a
    assert set(card_a["metrics"]) == {"bin0", "bin1"}
    assert "close_accuracy" in card_a["metrics"]["bin1"]
    from trained_models import load

    ma, _ = load(tmp_path / "a")
    mb, _ = load(tmp_path / "b")
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert card_a["metrics"] == card_b["metrics"]


def test_resume_after_interruption_equals_one_run(tmp_path):
    cfg = _tiny_cfg(epochs=3)
    train(cfg, tmp_path / "full", progress=False)
    # A wall budget that runs out after the first step interrupts the run; --resume finishes it.
    cfg_budget = _tiny_cfg(epochs=3, max_minutes=1e-9)
    train(cfg_budget, tmp_path / "wall", progress=False)
    st = json.loads((tmp_path / "wall" / "checkpoint" / "state.json").read_text())
    assert st["step"] == 1 and not st["done"]
    train(_tiny_cfg(epochs=3), tmp_path / "wall", resume=True, progress=False)
    from trained_models import load

    full, _ = load(tmp_path / "full")
    resumed, _ = load(tmp_path / "wall")
    for (k, v), (_, w) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-6), k


def test_resume_refuses_a_different_config(tmp_path):
    train(_tiny_cfg(epochs=1, max_minutes=1e-9), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="config differs"):
        train(_tiny_cfg(epochs=1, d_model=16), tmp_path / "r", resume=True, progress=False)


def test_checkpoint_that_does_not_match_its_config_is_a_clear_error(tmp_path):
    from hooks.mamba import HookedMamba, MambaConfig

    small = HookedMamba(MambaConfig(d_model=8, n_layers=1, vocab_size=7, d_state=4))
    save_model(small, tmp_path, {"model": {"family": "mamba", "config": small.cfg.to_dict()}})
    other = HookedMamba(MambaConfig(d_model=16, n_layers=1, vocab_size=7, d_state=4))
    with pytest.raises(CheckpointMismatch, match="does not match its config"):
        load_weights(other, tmp_path / "model.safetensors")
    deeper = HookedMamba(MambaConfig(d_model=8, n_layers=2, vocab_size=7, d_state=4))
    with pytest.raises(CheckpointMismatch, match="missing tensors"):
        load_weights(deeper, tmp_path / "model.safetensors")


def test_unknown_model_name_lists_the_shipped_ones():
    from trained_models import load

    with pytest.raises(FileNotFoundError, match="no model 'nope'"):
        load("nope")


def test_construction_evaluates_perfectly_through_the_same_code():
    from trained_models.registry import load_any

    model, card = load_any("construction:dyck", K=8, h=10)
    assert card is None
    language = languages.get("dyck", K=8, h=10)
    res = evaluate_strings(model, language, language.sample(8, 100, 300, seed=0))
    assert res["strict_accuracy"] == 1.0 and res["close_accuracy"] == 1.0


def test_decay_matrices_exempts_a_log_d_biases_and_norms():
    from trained_models.build import build_model, model_spec
    from trained_models.objective import param_groups

    cfg = _tiny_cfg(decay="matrices", weight_decay=0.5, lr=0.1)
    language = languages.get("dyck", K=2, h=3)
    model = build_model(model_spec(cfg, Vocab(language.alphabet).size, language))
    groups = param_groups(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in groups[1]["params"]}
    assert groups[1]["weight_decay"] == 0.0
    assert any(n.endswith("A_log") for n in exempt) and any(n.endswith(".D") for n in exempt)
    assert any("norm" in n for n in exempt)
    assert not any(n.endswith("in_proj.weight") or n.endswith("out_proj.weight") for n in exempt)
    # Every parameter appears once (the tied embedding too).
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len({id(p) for p in model.parameters()})
    # With a zero gradient one AdamW step multiplies decayed parameters by (1 - lr * wd), and
    # leaves exempt ones unchanged: a hand computation of decoupled weight decay.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        factor = 1.0 if n in exempt else 1 - cfg.lr * cfg.weight_decay
        assert torch.allclose(p.detach(), before[n] * factor, atol=1e-7), n
    with pytest.raises(ValueError, match="decay"):
        _tiny_cfg(decay="some")


def test_saved_configs_without_decay_resume_as_decay_all():
    d = _tiny_cfg().to_dict()
    d.pop("decay")
    assert TrainConfig.from_dict(d).decay == "all"


def test_a_dev_tie_keeps_the_later_weights_without_resetting_patience(tmp_path, monkeypatch):
    import trained_models.training as tr

    monkeypatch.setattr(tr, "selection_metric", lambda language, res: 0.5)  # a saturated dev metric
    card = train(_tiny_cfg(epochs=5, patience=2), tmp_path / "run", progress=False)
    # 64 strings / batch 16 = 4 steps an epoch, one evaluation each: steps 4 (best), 8 and 12 (ties).
    assert card["best_step"] == 12 and card["steps"] == 12
    assert card["stop_reason"] == "no improvement in 2 evaluations"
    st = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert [h["step"] for h in st["history"]] == [4, 8, 12]


def test_bce_plus_lm_loss_is_the_sum_and_decodes_as_sets():
    from trained_models.objective import loss_fn

    language = languages.get("dyck", K=2, h=3)
    strings = language.sample(6, 4, 12, seed=2)
    batch = TorchBatch.from_batch(encode_batch(language, strings, Vocab(language.alphabet)))
    logits = torch.randn(*batch.allowed.shape, generator=torch.Generator().manual_seed(0))
    both = loss_fn(logits, batch, "bce+lm")
    assert both == pytest.approx(float(loss_fn(logits, batch, "bce") + loss_fn(logits, batch, "lm")), rel=1e-6)
    # By hand: the LM term is the mean next-symbol cross-entropy over real positions.
    m = batch.mask
    logp = torch.log_softmax(logits, -1)
    ce = -logp.gather(-1, batch.next_tokens.clamp_min(0)[..., None])[..., 0][m].mean()
    assert float(loss_fn(logits, batch, "lm")) == pytest.approx(float(ce), rel=1e-6)
    assert _tiny_cfg(loss="bce+lm").decode == "sigmoid" and _tiny_cfg(loss="lm").decode == "softmax"


def test_every_shipped_model_was_trained_by_its_recipe():
    """The card's training command is the recipe's (plus seed, output and budget flags), so
    ``python -m trained_models.recipes NAME`` reproduces what ships."""
    from trained_models import names
    from trained_models.recipes import RECIPES

    assert set(RECIPES) <= set(names())
    for name, argv in RECIPES.items():
        card = json.loads((Path(__file__).parents[1] / "trained_models" / "shipped" / name / "card.json").read_text())
        assert card["train_command"].startswith("python -m trained_models.train " + " ".join(argv) + " "), name


def test_dt_init_sets_the_initial_step_sizes():
    from trained_models.build import build_model, model_spec

    language = languages.get("dyck", K=2, h=3)
    cfg = _tiny_cfg(dt_init=(1e-4, 1e-3))
    model = build_model(model_spec(cfg, Vocab(language.alphabet).size, language))
    dt = torch.nn.functional.softplus(model.blocks[0].mixer.dt_proj.bias.detach())
    assert dt.min() >= 1e-4 * 0.999 and dt.max() <= 1e-3 * 1.001
    assert TrainConfig.from_dict(cfg.to_dict()).dt_init == (1e-4, 1e-3)
    with pytest.raises(ValueError, match="dt_init"):
        _tiny_cfg(dt_init=(1e-2, 1e-3))


def test_a_run_killed_before_its_final_evaluation_is_evaluated_not_retrained(tmp_path, monkeypatch):
    import trained_models.training as tr

    cfg = _tiny_cfg(epochs=6, patience=1)
    monkeypatch.setattr(tr, "selection_metric", lambda language, res: 0.5)  # early stop after one tie
    first = train(cfg, tmp_path / "run", progress=False)
    assert first["stop_reason"].startswith("no improvement") and first["steps"] < 24
    # The kill: the checkpoint says done, but the card was never given its metrics.
    card_path = tmp_path / "run" / "card.json"
    card = json.loads(card_path.read_text())
    card["metrics"] = None
    card_path.write_text(json.dumps(card))
    again = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert again["steps"] == first["steps"] and again["metrics"] == first["metrics"]
    # Re-running the same finished, early-stopped run changes nothing; a larger budget extends it.
    assert train(cfg, tmp_path / "run", resume=True, progress=False)["steps"] == first["steps"]
    longer = train(_tiny_cfg(epochs=8, patience=1), tmp_path / "run", resume=True, progress=False)
    assert longer["steps"] > first["steps"]


def test_init_from_starts_from_the_given_weights_and_checks_the_architecture(tmp_path):
    from trained_models import load

    train(_tiny_cfg(), tmp_path / "base", progress=False)
    base, _ = load(tmp_path / "base")
    # lr ~ 0: the fine-tuned weights stay the base's (a fresh init would differ everywhere).
    tuned_card = train(_tiny_cfg(init_from=str(tmp_path / "base"), lr=1e-12, epochs=1, weight_decay=0.0),
                       tmp_path / "tuned", progress=False)
    assert tuned_card["train_config"]["init_from"] == str(tmp_path / "base")
    tuned, _ = load(tmp_path / "tuned")
    for (k, v), (_, w) in zip(base.state_dict().items(), tuned.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-6), k
    with pytest.raises(CheckpointMismatch):
        train(_tiny_cfg(init_from=str(tmp_path / "base"), d_model=12), tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="init-from"):
        train(_tiny_cfg(init_from=str(tmp_path / "nowhere")), tmp_path / "bad2", progress=False)


def test_fine_tuning_recipes_name_a_base_stage():
    from trained_models.recipes import BASES, RECIPES

    for name, argv in RECIPES.items():
        if "--init-from" in argv:
            src = argv[argv.index("--init-from") + 1]
            assert src.startswith("runs/") and src.split("/", 1)[1] in BASES, name
    assert not set(BASES) & set(RECIPES)


def test_the_dev_schedule_is_what_training_does(tmp_path, monkeypatch):
    """:func:`evaluates_at` is the loop's rule (the suite's header and patience are computed from it): with 5 steps
    an epoch and 2 evaluations an epoch, dev is scored every 2 steps and at each epoch's last step."""
    import trained_models.training as tr

    monkeypatch.setattr(tr, "selection_metric", lambda language, res: 0.5)  # ties only: patience runs out
    card = train(_tiny_cfg(n_train=40, batch_size=8, epochs=3, evals_per_epoch=2, patience=4), tmp_path / "run",
                 progress=False)
    st = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    expected = [2, 4, 5, 6, 8]  # by hand: step % 2 == 0 or step % 5 == 0; the 4th evaluation after step 2 stops
    assert [h["step"] for h in st["history"]] == expected == [s for s in range(1, 9) if tr.evaluates_at(s, 5, 2, 15)]
    assert card["stop_reason"] == "no improvement in 4 evaluations"
    # patience_span by hand on that schedule over 10 steps (evaluations 2, 4, 5, 6, 8, 10): 2 evaluations
    # after the best stop 3, 2, 3 and 4 steps later
    assert tr.patience_span(5, 2, 2, 10) == (2, 4)
    assert tr.patience_span(5, 2, 6, 10) is None


def test_the_suite_header_states_the_patience_its_runs_had():
    """medium: 5,000 strings, batch 32 = 157 steps an epoch, evaluated at 78, 156, 157, ...; patience 6 raised to
    ceil(600 / 78) = 8 evaluations, which the epoch-end evaluations shorten to 390-467 steps (the runs that
    stopped on patience did so 390-500 steps after their last improvement, the fewer-string windows later)."""
    from trained_models.suite_plan import BUDGETS, Run

    b = BUDGETS["medium"]
    assert b.steps(5000) == (157, 1256) and b.patience_evals(5000) == 8
    assert "stops 390–467 steps after its last improvement" in b.describe()
    argv = Run("tomita5", "mamba-1l", "medium", "runs").argv()
    assert argv[argv.index("--patience") + 1] == "8"
