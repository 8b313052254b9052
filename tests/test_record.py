"""The run record (genctl/runs/record.py): what train writes, eval adds and every reader reads."""

from __future__ import annotations

import json

import pytest

from genctl.errors import GenctlError
from genctl.runs.record import FILENAME, Evaluation, RunRecord
from tests.conftest import TINY


def nll(nats: float, estimator: str) -> dict:
    return {"nats": nats, "bits_per_dim": nats / 543.4, "estimator": estimator}


# metrics.json as genctl train wrote it before the record existed, then merged into by genctl eval
OLD = {
    "model": "vae",
    "dataset": "digits",
    "binarize": "dynamic",
    "params": 12345,
    "epochs": 1,
    "steps": 8,
    "stopped": "completed",
    "wall_time_s": 1.2,
    "train_images_per_s": 1500.0,
    "peak_memory_mb": 400.1,
    "best_epoch": 1,
    "skipped_steps": 0,
    "best_val_loss": 200.5,
    "train_loss": 210.25,
    "samples_per_s": None,
    "images": ["/runs/x/samples.png"],
    "test": {"nll_elbo": nll(205.0, "negative ELBO"), "nll_iwae": nll(201.0, "IWAE bound, k=4"), "kl": 12.5},
    "test_split": "digits test (500 images), checkpoint best.pt",
    "val": {"nll_elbo": nll(199.0, "negative ELBO")},
    "val_split": "digits val (200 images, binarize=dynamic), checkpoint best.pt",
}


def test_an_old_metrics_json_reads_into_the_record_and_writes_back_the_same(tmp_path):
    (tmp_path / FILENAME).write_text(json.dumps(OLD, indent=2))
    record = RunRecord.read(tmp_path)
    assert (record.model, record.params, record.steps, record.stopped, record.samples_per_s) == (
        "vae",
        12345,
        8,
        "completed",
        None,
    )
    assert set(record.evaluations) == {"test", "val"} and record.extra == {}
    assert record.evaluations["test"].about == OLD["test_split"]
    assert record.evaluations["test"].scalars() == {"nll_elbo": 205.0, "nll_iwae": 201.0, "kl": 12.5}
    record.write(tmp_path)
    rewritten = json.loads((tmp_path / FILENAME).read_text())
    assert rewritten == {k: v for k, v in OLD.items() if v is not None}  # a null is the same as not recorded
    assert list(rewritten) == [k for k, v in OLD.items() if v is not None]  # and in the same order


def test_round_trip_keeps_evaluations_and_keys_it_does_not_know(tmp_path):
    record = RunRecord(model="ae", params=10, epochs=2, best_val_loss=0.05, images=["r.png"])
    record.evaluations["test"] = Evaluation({"mse": 0.04}, "digits test (500 images), checkpoint best.pt")
    record.evaluations["test@last.pt"] = Evaluation({"mse": 0.05}, "digits test (500 images), checkpoint last.pt")
    record.extra["fid"] = {"value": 3.0}  # a newer genctl's field: not an evaluation (no fid_split), kept as is
    path = record.write(tmp_path)
    assert path == tmp_path / FILENAME and not list(tmp_path.glob(".*.tmp"))
    assert RunRecord.read(tmp_path) == record


def test_an_evaluation_only_record_starts_empty(tmp_path):
    assert RunRecord.read(tmp_path, missing_ok=True) == RunRecord()
    record = RunRecord()
    record.evaluations["val"] = Evaluation({"nll_exact": nll(90.0, "exact")}, "digits val, checkpoint last.pt")
    record.write(tmp_path)
    assert json.loads((tmp_path / FILENAME).read_text()) == {
        "val": record.evaluations["val"].metrics,
        "val_split": "digits val, checkpoint last.pt",
    }


@pytest.mark.parametrize(
    "metrics, expected",
    [
        (
            {"nll_elbo": nll(99.0, "negative ELBO"), "nll_iwae": nll(95.0, "IWAE bound, k=100"), "nll_exact": nll(90.0, "exact")},
            "nll_exact",
        ),
        ({"nll_elbo": nll(99.0, "negative ELBO"), "kl": 20.0, "nll_iwae": nll(95.0, "IWAE bound, k=100")}, "nll_iwae"),
        ({"kl": 20.0, "nll_elbo": nll(99.0, "negative ELBO")}, "nll_elbo"),
        ({"mse": 0.04}, None),
    ],
    ids=["exact", "iwae", "elbo", "none"],
)
def test_best_nll_is_the_tightest_estimate(metrics, expected):
    record = RunRecord(evaluations={"test": Evaluation(metrics)})
    best = record.best_nll()
    if expected is None:
        assert best is None
        return
    assert (best.name, best.nats, best.bits_per_dim, best.estimator) == (
        expected,
        metrics[expected]["nats"],
        metrics[expected]["bits_per_dim"],
        metrics[expected]["estimator"],
    )
    assert RunRecord().best_nll() is None and record.best_nll("val") is None


@pytest.mark.parametrize(
    "content, reason",
    [(b'{"model": "vae", "test": {', "Expecting"), (b"[1, 2]", "a JSON list, not an object"), (b"\xff\xfe\x00", "utf-8")],
    ids=["truncated", "not-an-object", "binary"],
)
def test_a_corrupt_record_is_one_actionable_line(tmp_path, content, reason):
    (tmp_path / FILENAME).write_bytes(content)
    with pytest.raises(GenctlError) as e:
        RunRecord.read(tmp_path)
    message = str(e.value)
    assert "\n" not in message and reason in message
    assert message.startswith(f"{tmp_path / FILENAME} is not a readable run record") and f"genctl eval ckpt={tmp_path}" in message


def test_a_missing_record_says_how_to_get_one(tmp_path):
    with pytest.raises(GenctlError, match=f"{FILENAME} does not exist: train the run to the end or run genctl eval"):
        RunRecord.read(tmp_path)


def test_without_an_end_of_training_test_the_run_reads_the_last_separate_one():
    record = RunRecord()
    record.evaluations["test@best.pt"] = Evaluation({"nll_exact": nll(92.0, "exact")})
    record.evaluations["val@last.pt"] = Evaluation({"nll_exact": nll(95.0, "exact")})
    record.evaluations["test@last.pt"] = Evaluation({"nll_exact": nll(91.0, "exact")})
    assert record.best_nll().nats == 91.0 and record.best_nll("val").nats == 95.0
    record.evaluations["test"] = Evaluation({"nll_exact": nll(93.0, "exact")})
    assert record.evaluation() is record.evaluations["test"] and record.best_nll().nats == 93.0


def test_genctl_eval_and_the_end_of_training_test_are_both_kept_each_labelled(cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", *TINY, "trainer.max_steps=3", f"hydra.run.dir={run}")
    assert code == 0, err
    for args in (["eval.k=2"], ["eval.k=3", "eval.split=val"]):  # as if run while the run trains
        code, _, err = cli("eval", f"ckpt={run}", *args)
        assert code == 0, err
    code, _, err = cli("eval", f"ckpt={run / 'last.pt'}", "eval.k=5")
    assert code == 0, err
    code, _, err = cli("train", f"resume={run}", "eval.k=6")  # the budget is spent: only the end of training runs again
    assert code == 0, err
    metrics = json.loads((run / FILENAME).read_text())
    assert metrics["steps"] == 3
    evaluations = ("test", "test@best.pt", "val@best.pt", "test@last.pt")
    assert {name: metrics[name]["nll_iwae"]["estimator"] for name in evaluations} == {
        "test": "IWAE bound, k=6",
        "test@best.pt": "IWAE bound, k=2",
        "val@best.pt": "IWAE bound, k=3",
        "test@last.pt": "IWAE bound, k=5",
    }
    assert metrics["test_split"].endswith("checkpoint best.pt")
    assert metrics["test@best.pt_split"].endswith("checkpoint best.pt at step 3")
    assert "; val split, checkpoint best.pt" in metrics["val@best.pt_split"] and metrics["test@last.pt_split"].endswith(
        "checkpoint last.pt at step 3"
    )
    assert RunRecord.read(run).best_nll().estimator == "IWAE bound, k=6"  # readers of "test" get the end-of-training test
