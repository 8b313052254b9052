"""Validation, last.pt and image grids on a cadence in epochs, steps or seconds: events counted in
steps or seconds pause an epoch, which then continues where it stopped."""

from __future__ import annotations

import itertools
import json
import time

import pytest
import torch

import genctl.train.loop
import genctl.train.state
from genctl.train.cadence import Every
from genctl.train.step import LossWindow
from tests.conftest import TINY, one_line_error

# debug=tiny: 2,000 digits at batch 256, 8 steps per epoch
RUN = [*TINY, "trainer.epochs=2", "trainer.test_at_end=false", "trainer.sample_every=100"]


def validated_steps(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "value, every",
    [
        (2, Every(2, "epochs")),
        ("500steps", Every(500, "steps")),
        ("500 step", Every(500, "steps")),
        ("30s", Every(30, "seconds")),
        ("4%", Every(4, "percent")),
    ],
)
def test_a_cadence_reads_epochs_steps_or_seconds(value, every):
    assert Every.parse(value) == every


@pytest.mark.parametrize("value", ["5min", "steps", "0steps", 0, "1.5s", "0%", "101%"])
def test_a_malformed_cadence_is_refused(value):
    with pytest.raises(ValueError, match="cadence"):
        Every.parse(value)


def test_a_cadence_falls_at_epoch_ends_step_counts_elapsed_seconds_or_within_a_share():
    assert [Every(2, "epochs").due(e, 0, 0.0, done, 1.0) for e, done in [(2, True), (3, True), (2, False)]] == [
        True,
        False,
        False,
    ]
    assert [Every(3, "steps").due(0, s, 0.0, False, 1.0) for s in (3, 4, 6)] == [True, False, True]
    assert [Every(30, "seconds").due(0, 0, t, False, 1.0) for t in (29.9, 30.0)] == [False, True]
    # a share: (the time outside the steps if the event ran now, whether an epoch just ended)
    cases = [(0.04, True), (0.0401, True), (0.01, False)]
    assert [Every(4, "percent").due(0, 0, 0.0, done, share) for share, done in cases] == [True, False, False]


def test_validation_in_steps_pauses_the_epoch_without_changing_training(cli, tmp_path):
    runs = {name: tmp_path / name for name in ("epochs", "steps")}
    code, _, err = cli("train", *RUN, f"hydra.run.dir={runs['epochs']}")
    assert code == 0, err
    code, _, err = cli("train", *RUN, "trainer.val_every=3steps", "trainer.ckpt_every=5steps", f"hydra.run.dir={runs['steps']}")
    assert code == 0, err
    assert validated_steps(runs["epochs"]) == [8, 16]
    assert validated_steps(runs["steps"]) == [3, 6, 9, 12, 15, 16]  # and once more where training ends
    weights = [torch.load(run / "last.pt", weights_only=True)["model"] for run in runs.values()]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_validation_in_seconds_counts_the_budgets_clock(cli, tmp_path, monkeypatch):
    ticks = itertools.count(step=20.0)  # every read of the process's CPU clock: 20 s later
    monkeypatch.setattr(genctl.train.state.time, "process_time", lambda: next(ticks))
    run = tmp_path / "run"
    code, _, err = cli("train", *RUN, "trainer.clock=cpu", "trainer.val_every=50s", f"hydra.run.dir={run}")
    assert code == 0, err
    steps = validated_steps(run)
    assert steps[-1] == 16 and len(steps) >= 4
    assert all(b - a >= 2 for a, b in itertools.pairwise(steps[:-1]))  # 50 s of a clock 20 s a step: never two steps apart


def test_a_bad_cadence_is_one_line(cli, tmp_path):
    code, _, err = cli("train", *RUN, "trainer.val_every=5min", f"hydra.run.dir={tmp_path / 'run'}")
    line = one_line_error(code, err)
    assert "val_every" in line and "500steps" in line


def test_a_share_cadence_skips_the_events_that_would_cost_more_than_it(cli, tmp_path, monkeypatch):
    """A validation of 0.3 s after epochs of a fraction of a second: the first one is taken (priced
    from the training speed, 16 images cost next to nothing), the next would put the time outside
    the steps far above 5%, so validation waits for the end of training, where every event happens;
    per epoch, all six are taken. Each step takes at least 10 ms: epochs of 8 steps at full speed
    last ~30 ms, where a millisecond's hiccup outside the steps would tip the first one over 5%."""
    original, add = genctl.train.loop.mean_loss, LossWindow.add

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return original(*args, **kwargs)

    def slow_step(*args, **kwargs):
        time.sleep(0.01)
        return add(*args, **kwargs)

    monkeypatch.setattr(genctl.train.loop, "mean_loss", slow)
    monkeypatch.setattr(LossWindow, "add", slow_step)
    runs = {every: tmp_path / every.strip("%") for every in ("5%", "1")}
    for every, run in runs.items():
        args = [*RUN, "trainer.epochs=6", "trainer.val_images=16", f"trainer.val_every={every}", f"hydra.run.dir={run}"]
        code, _, err = cli("train", *args)
        assert code == 0, err
    assert validated_steps(runs["5%"]) == [8, 48]
    assert validated_steps(runs["1"]) == [8, 16, 24, 32, 40, 48]
    weights = [torch.load(run / "last.pt", weights_only=True)["model"] for run in runs.values()]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # validation never changes training


def test_a_validation_not_yet_run_is_priced_from_the_training_speed():
    """At the first epoch's end (1 s of training at 2,000 images/s, nothing outside the steps yet),
    a validation of 500 images is priced at a training step per image: 0.25 s, 40% of the time with
    the end's validation reserved, above a 2% share, so it is not taken; one of 16 images (1.6%) is.
    Once run, its measured cost counts instead."""
    from genctl.train.cadence import Events, Schedule

    every = Every.parse("2%")
    schedule = Schedule(1000, 20, every, Every.parse(1000), Every.parse(1000), None, None, "wall")
    first_epoch = dict(epoch=1, step=8, now=1.0, elapsed=1.0, outside=0.0, epoch_done=True, images_per_s=2000.0)
    assert Events(schedule, 0.0, val_images=500).due(**first_epoch)[0] is False
    assert Events(schedule, 0.0, val_images=16).due(**first_epoch)[0] is True
    measured = Events(schedule, 0.0, val_images=500)
    measured.cost["val"] = 0.001
    assert measured.due(**first_epoch)[0] is True
    assert Events(schedule, 0.0, val_images=500).expected_cost("val", 2000.0) == 0.25
    assert Events(schedule, 0.0, val_images=500).expected_cost("val", float("nan")) == 0.0  # no speed yet: free


def test_a_share_keeps_room_for_the_events_at_the_end():
    """Every event happens once more when training stops, so a share counts those in: after 100 s of
    training with nothing outside the steps yet, a validation of 2 s fits a 4% share alone (2%) but
    not beside the end's validation, last.pt (1.5 s) and grids (1 s): 6.5 s of 102, 6.4%. After
    200 s it fits (3.2%), and the run can end within 4% with all of them."""
    from genctl.train.cadence import Events, Schedule

    every = Every.parse("4%")
    events = Events(Schedule(1000, 20, every, every, every, None, None, "wall"), 0.0, val_images=500)
    events.cost.update(val=2.0, ckpt=1.5, sample=1.0)
    epoch_end = dict(epoch=1, step=8, now=100.0, elapsed=100.0, outside=0.0, epoch_done=True, images_per_s=2000.0)
    assert events.due(**epoch_end)[0] is False
    assert events.due(**{**epoch_end, "now": 200.0, "elapsed": 200.0})[0] is True


def test_val_images_validates_on_the_first_images_of_the_split(tmp_path):
    """trainer.val_images keeps a validation cheap: the first N images of the split, the same ones
    at every validation, so best.pt is still chosen by one yardstick."""
    from hydra import compose, initialize_config_dir

    from genctl.config import config_dir, hydra_version_base
    from genctl.data import load_dataset
    from genctl.train.build import build_trainer

    with initialize_config_dir(str(config_dir()), job_name="train", **hydra_version_base()):
        cfg = compose("train", [*TINY, "trainer.val_images=7"])
    trainer, report = build_trainer(cfg, tmp_path, hooks=[])
    assert report is None  # hooks given: the caller reports
    assert torch.equal(trainer.val.x.cpu(), load_dataset(cfg.dataset).fixed("val")[:7])
    with initialize_config_dir(str(config_dir()), job_name="train", **hydra_version_base()):
        cfg = compose("train", [*TINY])
    assert len(build_trainer(cfg, tmp_path, hooks=[])[0].val.x) == len(load_dataset(cfg.dataset).val)
