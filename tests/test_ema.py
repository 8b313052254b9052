"""trainer.ema: the moving average of the weights is what validation, tests and samples use, and a
resumed run continues it exactly."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from genctl.models import build_model
from genctl.runs.checkpoint import load_checkpoint, restore_model
from genctl.train.ema import EMA
from tests.conftest import TINY


def test_the_average_moves_one_minus_decay_towards_the_weights_and_copies_buffers():
    made = {"name": "made", "hidden": [5], "activation": "relu", "num_masks": 2, "order_agnostic": True}
    model = build_model(OmegaConf.create({**made, "eval_masks": 1, "seed": 0}), (1, 2, 2), True)
    ema = EMA(model, decay=0.75)
    first = {n: p.detach().clone() for n, p in model.named_parameters()}
    ema.update()  # the first update copies the weights
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.next_mask.fill_(1)
    ema.update()
    for name, p in ema.model.named_parameters():
        torch.testing.assert_close(p, first[name] + 0.25, rtol=0, atol=1e-6)
    assert int(ema.model.next_mask) == 1  # buffers are the trained model's, never averaged
    assert torch.equal(ema.model.input_degrees, model.input_degrees)
    with pytest.raises(ValueError, match="between 0 and 1"):
        EMA(model, decay=1.0)


def final(run, key):
    state = load_checkpoint(run / "last.pt")
    return state["model"] if key == "model" else state["ema"]["weights"]


def test_a_resumed_run_continues_the_average_and_evaluation_uses_it(cli, tmp_path):
    common = [*TINY, "trainer.epochs=2", "trainer.batch_size=128", "trainer.ema=0.9", "eval.k=2"]
    code, _, err = cli("train", *common, f"hydra.run.dir={tmp_path / 'straight'}")
    assert code == 0, err
    code, _, err = cli("train", *common, "trainer.max_steps=20", f"hydra.run.dir={tmp_path / 'split'}")
    assert code == 0, err
    code, _, err = cli("train", f"resume={tmp_path / 'split'}", "trainer.max_steps=null")
    assert code == 0, err
    for key in ("model", "ema"):
        straight, resumed = final(tmp_path / "straight", key), final(tmp_path / "split", key)
        assert all(torch.equal(straight[n], resumed[n]) for n in straight), key
    best = tmp_path / "straight" / "best.pt"
    state = load_checkpoint(best)
    averaged, trained = state["ema"]["weights"], state["model"]
    assert any(not torch.equal(averaged[n], trained[n]) for n in trained)
    model = restore_model(state, best)  # what genctl eval and sample build
    assert all(torch.equal(p, averaged[n]) for n, p in model.state_dict().items())
    code, _, err = cli("eval", f"ckpt={best}", "eval.k=2", "eval.seed=0")
    assert code == 0, err
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["test@best.pt"]["nll_iwae"]["nats"] == pytest.approx(metrics["test"]["nll_iwae"]["nats"], abs=1e-9)
