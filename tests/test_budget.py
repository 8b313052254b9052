"""trainer.max_time counted on the clock trainer.clock names: the wall clock by default, or the
process's CPU time, which the model benchmark budgets by."""

from __future__ import annotations

import itertools
import json
import time

import pytest

import genctl.train.loop
import genctl.train.state
from genctl.runs.checkpoint import load_checkpoint
from genctl.runs.progress import Progress
from genctl.train.state import Stopwatch
from tests.conftest import TINY, one_line_error

# three epochs of 2,000 digits at batch 256: 24 steps unless the budget stops the run
RUN = [*TINY, "trainer.epochs=3", "trainer.max_time=1", "trainer.test_at_end=false"]


@pytest.fixture
def cpu_minute_per_read(monkeypatch):
    """A process CPU clock that advances a whole minute each time it is read, the wall clock untouched."""
    ticks = itertools.count(step=60.0)
    monkeypatch.setattr(genctl.train.state.time, "process_time", lambda: next(ticks))


@pytest.mark.parametrize("clock, stopped", [("cpu", "max_time"), ("wall", "completed")])
def test_the_budget_is_counted_on_the_named_clock(cli, tmp_path, cpu_minute_per_read, clock, stopped):
    run = tmp_path / clock
    code, _, err = cli("train", *RUN, f"trainer.clock={clock}", f"hydra.run.dir={run}")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped"] == stopped
    assert (metrics["steps"] == 1) == (clock == "cpu")
    assert metrics["cpu_time_s"] >= 60 and metrics["wall_time_s"] < 60


def test_the_stopwatch_continues_what_a_resumed_run_had_spent(cpu_minute_per_read, monkeypatch):
    wall = iter([100.0, 103.0])  # the wall clock when the watch starts, and when it is read
    monkeypatch.setattr(genctl.train.state.time, "monotonic", lambda: next(wall))
    progress = Progress(elapsed=5.0, cpu_seconds=7.0)
    watch = Stopwatch(progress)
    watch.update(progress)
    assert progress.elapsed == 8.0 and progress.cpu_seconds == 67.0  # 5 s before + 3 s; 7 s + one minute


def test_an_unknown_clock_is_refused(cli, tmp_path):
    code, _, err = cli("train", *RUN, "trainer.clock=gpu", f"hydra.run.dir={tmp_path / 'x'}")
    assert code == 2 and "clock" in err and "wall" in err, err


def test_the_time_outside_the_steps_is_recorded(cli, tmp_path, monkeypatch):
    """Validation, checkpoints, image grids and logs are timed apart from the optimizer steps: a
    validation made 0.3 s slower shows in outside_steps_s once per epoch, and in its share of the run."""
    original = genctl.train.loop.mean_loss

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return original(*args, **kwargs)

    monkeypatch.setattr(genctl.train.loop, "mean_loss", slow)
    run = tmp_path / "run"
    code, _, err = cli("train", *TINY, "trainer.epochs=3", "trainer.test_at_end=false", f"hydra.run.dir={run}")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.9 <= metrics["outside_steps_s"] < metrics["wall_time_s"]
    assert metrics["outside_steps_share"] == pytest.approx(metrics["outside_steps_s"] / metrics["wall_time_s"], rel=0.1)


def test_best_pt_is_kept_as_it_stands_at_each_mark(cli, tmp_path, cpu_minute_per_read):
    """trainer.keep_best_at: one run gives the checkpoints of an NLL-against-compute curve. With a CPU
    clock that advances a minute per read, marks at 1 and 3 minutes fall within the first steps;
    each validates (no cadence does before the end), the copy is a loadable best.pt of that moment,
    and what the marks cost is counted apart from the rest of the time outside the steps."""
    run = tmp_path / "run"
    marks = "trainer.keep_best_at=[1,3,1000]"
    code, _, err = cli(
        "train", *TINY, "trainer.clock=cpu", "trainer.epochs=2", "trainer.val_every=100", marks, f"hydra.run.dir={run}"
    )
    assert code == 0, err
    kept = sorted(p.name for p in run.glob("best@*"))
    assert kept == ["best@1min.pt", "best@3min.pt"]  # the 1000-minute mark was never reached
    early, final = load_checkpoint(run / "best@1min.pt"), load_checkpoint(run / "best.pt")
    assert early["progress"]["step"] < final["progress"]["step"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["outside_marks_s"] < metrics["outside_steps_s"]
    plain = tmp_path / "plain"
    code, _, err = cli("train", *TINY, "trainer.epochs=1", "trainer.test_at_end=false", f"hydra.run.dir={plain}")
    assert code == 0, err
    assert json.loads((plain / "metrics.json").read_text())["outside_marks_s"] == 0
    code, _, err = cli("train", *TINY, "trainer.keep_best_at=[2,1]", f"hydra.run.dir={tmp_path / 'bad'}")
    assert "keep_best_at is minutes of training, each > 0 and increasing" in one_line_error(code, err)
