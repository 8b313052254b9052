"""Experiment trackers chosen by ``logger=[...]`` (MLflow, W&B offline), and a sweep in TensorBoard's HParams tab."""

from __future__ import annotations

import importlib.machinery
import json
import os
import struct
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from genctl.errors import GenctlError
from genctl.runs.record import FILENAME
from genctl.train import trackers
from genctl.train.loop import Interrupted
from genctl.train.trackers import MLFLOW_HTTP, chosen_loggers
from tests.conftest import TINY, one_line_error

SCALARS = ("train/loss", "val/loss", "test/nll_iwae")
QUICK = [*TINY, "trainer.max_steps=2"]


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A file store in tmp_path: MLflow 3 refuses one without MLFLOW_ALLOW_FILE_STORE, and a fresh
    SQLite store (the default) spends seconds creating its tables (test_the_default_store_is_sqlite)."""
    pytest.importorskip("mlflow", reason="needs genctl[track]")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return f"file:{tmp_path / 'mlruns'}"


def mlflow_runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("genctl").experiment_id])


def test_mlflow_beside_tensorboard_gets_scalars_params_and_images(cli, tmp_path, mlflow_store):
    from mlflow import MlflowClient

    code, _, err = cli(
        "train", *QUICK, "logger=[tensorboard,mlflow]", f"tracking.mlflow.tracking_uri={mlflow_store}", "hydra.run.dir=run"
    )
    assert code == 0, err
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    (run,) = mlflow_runs(mlflow_store)
    record = json.loads((tmp_path / "run" / FILENAME).read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.metrics["test/nll_iwae"] == pytest.approx(record["test"]["nll_iwae"]["nats"])
    assert run.data.metrics["val/loss"] == pytest.approx(record["best_val_loss"])
    client = MlflowClient(mlflow_store)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [record["steps"]]
    assert set(SCALARS) <= set(run.data.metrics)
    assert run.data.params["model.name"] == "vae" and run.data.params["model.hidden"] == "[32]"
    assert not any(key.startswith("tracking.") for key in run.data.params)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples.png", "reconstructions.png", FILENAME, "images"} <= artifacts
    steps = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
    assert any(f"samples+step+{record['steps']}+" in path for path in steps)


def test_mlflow_alone_writes_no_tensorboard_folder(cli, tmp_path, mlflow_store):
    code, _, err = cli("train", *QUICK, "logger=[mlflow]", f"tracking.mlflow.tracking_uri={mlflow_store}", "hydra.run.dir=run")
    assert code == 0, err
    assert not (tmp_path / "run" / "tb").exists() and (tmp_path / "run" / FILENAME).is_file()
    assert [run.info.status for run in mlflow_runs(mlflow_store)] == ["FINISHED"]


@pytest.mark.parametrize(
    "error, status", [(ZeroDivisionError("a bug mid-epoch"), "FAILED"), (Interrupted("stopped by SIGTERM"), "KILLED")]
)
def test_a_training_that_ends_in_an_error_marks_its_mlflow_run(cli, mlflow_store, monkeypatch, error, status):
    from genctl.train import build

    def broken(self, signals):
        raise error

    monkeypatch.setattr(build.Trainer, "run_epoch", broken)
    code, _, _ = cli("train", *TINY, "logger=[mlflow]", f"tracking.mlflow.tracking_uri={mlflow_store}", "hydra.run.dir=run")
    assert code != 0
    assert [run.info.status for run in mlflow_runs(mlflow_store)] == [status]


@pytest.mark.slow
def test_the_default_store_is_sqlite_where_genctl_runs(cli, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="needs genctl[track]")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = cli("train", *QUICK, "logger=[mlflow]", "hydra.run.dir=run")
    assert code == 0, err
    assert (tmp_path / "mlflow.db").is_file()
    (run,) = mlflow_runs("sqlite:///mlflow.db")
    assert set(SCALARS) <= set(run.data.metrics)
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "mlruns")


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run's ``.wandb`` file: a 7-byte header, then LevelDB's log
    format (32 KiB blocks of chunks, each with a 7-byte header: crc, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data, records, chunk, pos = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            records.append(wandb_internal_pb2.Record.FromString(chunk))
            chunk = b""
    return records


def test_wandb_offline_run_holds_the_same_scalars_and_the_config(cli, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="needs genctl[track]")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = [
        "logger=[tensorboard,wandb]",
        "tracking.wandb.mode=offline",
        f"tracking.wandb.dir={tmp_path / 'w'}",
        "hydra.run.dir=run",
    ]
    code, _, err = cli("train", *QUICK, *args)
    assert code == 0, err
    wandb.teardown()  # W&B's service process may still be writing the finished run's file: wait for it
    (offline,) = (tmp_path / "w" / "wandb").glob("offline-run-*")
    records = wandb_records(next(offline.glob("run-*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    history = {
        "/".join(item.nested_key) or item.key: json.loads(item.value_json)
        for r in records
        if r.history
        for item in r.history.item
    }
    record = json.loads((tmp_path / "run" / FILENAME).read_text())
    assert set(SCALARS) <= set(history) and history["_step"] == record["steps"]
    assert history["test/nll_iwae"] == pytest.approx(record["test"]["nll_iwae"]["nats"])
    assert history["samples/_type"] == "image-file"  # an image logged with the scalars of its step
    (run,) = (r.run for r in records if r.WhichOneof("record_type") == "run")
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["model"]["name"] == "vae" and "tracking" not in config
    assert run.display_name == "run"
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [0] and kinds[-1] == "exit"
    assert {"samples.png", FILENAME} <= {p.name for p in (offline / "files").iterdir()}


def test_an_unknown_logger_lists_the_valid_ones(cli):
    code, _, err = cli("train", *TINY, "logger=[tensorboard,mlfow]")
    assert one_line_error(code, err).endswith(
        "unknown logger 'mlfow'; choose from: tensorboard, mlflow, wandb (e.g. logger=[tensorboard,mlflow])"
    )


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_a_missing_tracker_package_names_the_pip_command(cli, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # what `import mlflow` finds when it is not installed
    code, _, err = cli("train", *TINY, f"logger=[tensorboard,{package}]")
    assert one_line_error(code, err).endswith(
        f"logger={package} needs the {package} package, which is not installed: pip install 'genctl[track]'"
    )


def test_a_database_store_without_sqlalchemy_says_what_to_install(monkeypatch):
    pytest.importorskip("mlflow", reason="needs genctl[track]")
    tracking = OmegaConf.load(Path(__file__).parents[1] / "configs" / "train.yaml").tracking
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(GenctlError, match=r"is a database store, which needs sqlalchemy.*: pip install sqlalchemy"):
        chosen_loggers(["mlflow"], OmegaConf.merge(tracking, {"mlflow": {"tracking_uri": "sqlite:///x.db"}}))
    assert chosen_loggers("tensorboard", tracking) == ["tensorboard"]


def event_file(folder: Path):
    """The event files of one TensorBoard run, read."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def test_a_sweep_has_an_hparams_session_per_job_failed_ones_marked(cli, tmp_path):
    from tensorboard.plugins.hparams import api_pb2, metadata

    sweep = tmp_path / "sweep"
    code, _, _ = cli("train", "-m", "model.latent_dim=4,0,2", *QUICK, f"hydra.sweep.dir={sweep}")
    assert code == 1  # job 1 failed, and is a session too
    content = event_file(sweep / "hparams").SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content
    experiment = metadata.parse_experiment_plugin_data(content)
    (latent,) = experiment.hparam_infos  # only what the sweep varied: not debug=tiny, trainer.max_steps
    assert latent.name == "model.latent_dim" and latent.type == api_pb2.DATA_TYPE_FLOAT64
    assert list(latent.domain_discrete) == [0, 2, 4]
    tags = [m.name.tag for m in experiment.metric_infos]
    assert tags[:3] == ["best_val_loss", "test/nll_elbo", "test/nll_elbo_bits_per_dim"] and "test/nll_iwae" in tags
    jobs = {job: event_file(sweep / "hparams" / job) for job in ("0", "1", "2")}
    for job, latent_dim, status in (("0", 4, api_pb2.STATUS_SUCCESS), ("1", 0, api_pb2.STATUS_FAILURE)):
        start = jobs[job].SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
        assert metadata.parse_session_start_info_plugin_data(start).hparams["model.latent_dim"].number_value == latent_dim
        end = jobs[job].SummaryMetadata(metadata.SESSION_END_INFO_TAG).plugin_data.content
        assert metadata.parse_session_end_info_plugin_data(end).status == status
    record = json.loads((sweep / "2" / FILENAME).read_text())
    assert jobs["2"].Scalars("best_val_loss")[-1].value == pytest.approx(record["best_val_loss"])
    assert jobs["2"].Scalars("test/nll_iwae_bits_per_dim")[-1].value == pytest.approx(record["test"]["nll_iwae"]["bits_per_dim"])
    assert jobs["1"].Tags()["scalars"] == []


def fake_package(monkeypatch, name: str, **attributes) -> types.ModuleType:
    """A stand-in for an optional package, found by ``importlib.util.find_spec`` and ``import``."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    monkeypatch.setitem(sys.modules, name, module)
    return module


class FakeMlflowClient:
    """MlflowClient as genctl calls it; ``log_batch`` of metrics raises or blocks (``FakeMlflowClient.fail``)."""

    calls: list[str] = []
    environ: dict[str, str | None] = {}
    fail: Callable[[], None] = staticmethod(lambda: None)

    def __init__(self, uri):
        FakeMlflowClient.environ = {name: os.environ.get(name) for name in MLFLOW_HTTP}

    def get_experiment_by_name(self, name):
        return types.SimpleNamespace(experiment_id="0")

    def create_run(self, experiment_id, run_name, tags):
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1"))

    def log_batch(self, run_id, metrics=(), params=()):
        self.calls.append("metrics" if metrics else "params")
        if metrics:
            self.fail()

    def log_image(self, run_id, image, key, step):
        self.calls.append("image")

    def log_artifact(self, run_id, path):
        self.calls.append("artifact")

    def set_terminated(self, run_id, status):
        self.calls.append(status)


@pytest.fixture
def fake_mlflow(monkeypatch):
    """genctl's MLflow tracker on a fake ``mlflow`` package (the real one is optional)."""
    for name in MLFLOW_HTTP:
        monkeypatch.delenv(name, raising=False)
    fake_package(monkeypatch, "mlflow", MlflowClient=FakeMlflowClient)
    fake_package(monkeypatch, "mlflow.entities", Param=lambda key, value: (key, value), Metric=lambda *a: a)
    fake_package(monkeypatch, "mlflow.exceptions", MlflowException=type("MlflowException", (Exception,), {}))
    monkeypatch.setattr(FakeMlflowClient, "calls", [])
    return FakeMlflowClient


def trained_despite_the_tracker(cli, tmp_path, *args: str) -> list[str]:
    """Train with a tracker that fails: the run completes, with its checkpoints, its record and its
    test; the failure is one warning line and no traceback. Returns the warning lines."""
    start = time.perf_counter()
    code, out, err = cli("train", *QUICK, *args, "hydra.run.dir=run")
    assert time.perf_counter() - start < 30, "a tracker that does not answer stalled training"
    assert code == 0, err
    run = tmp_path / "run"
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    assert "nll_iwae" in json.loads((run / FILENAME).read_text())["test"]
    assert "Traceback" not in out + err
    warnings = [line for line in (out + err).splitlines() if "switched off" in line]
    assert len(warnings) == 1, out + err
    assert (run / "train.log").read_text().count("switched off for the rest of this run") == 1
    return warnings


def test_an_mlflow_call_that_raises_switches_mlflow_off_and_training_goes_on(cli, tmp_path, fake_mlflow):
    def bad_request():
        raise RuntimeError("API request to http://mlflow:5000/api/2.0/mlflow/runs/log-batch failed\nwith error code 400")

    fake_mlflow.fail = staticmethod(bad_request)
    (warning,) = trained_despite_the_tracker(cli, tmp_path, "logger=[mlflow]")
    assert warning.startswith("MLflow stopped working while logging ") and " scalars at step " in warning
    assert "(RuntimeError: API request to http://mlflow:5000/api/2.0/mlflow/runs/log-batch failed with error code 400)" in warning
    assert fake_mlflow.calls == ["params", "metrics"]  # nothing after the failure: no images, files or close
    assert fake_mlflow.environ == MLFLOW_HTTP  # MLflow's retries bounded for genctl's calls


def test_an_mlflow_call_that_does_not_answer_is_given_up_on(cli, tmp_path, fake_mlflow, monkeypatch):
    released = threading.Event()
    fake_mlflow.fail = staticmethod(lambda: released.wait(60))  # a server that accepted the connection and went silent
    monkeypatch.setattr(trackers, "CALL_TIMEOUT_S", 0.5)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")  # the user's own setting is kept
    try:
        (warning,) = trained_despite_the_tracker(cli, tmp_path, "logger=[tensorboard,mlflow]")
    finally:
        released.set()
    assert "(no answer after 0.5 s): switched off for the rest of this run; training continues" in warning
    assert fake_mlflow.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_a_wandb_run_whose_service_died_switches_wandb_off_and_training_goes_on(cli, tmp_path, monkeypatch):
    logged: list[dict] = []

    class Run:
        def log(self, values, step):
            logged.append(values)
            raise ConnectionResetError("[Errno 104] Connection reset by peer (wandb-core is gone)")

        def finish(self, exit_code):
            raise AssertionError("a switched-off tracker was closed")

    errors = types.SimpleNamespace(Error=type("Error", (Exception,), {}))
    fake_package(monkeypatch, "wandb", init=lambda **kwargs: Run(), Settings=dict, errors=errors, Image=lambda image: image)
    (warning,) = trained_despite_the_tracker(cli, tmp_path, "logger=[wandb]", f"tracking.wandb.dir={tmp_path / 'w'}")
    assert warning.startswith("W&B stopped working while logging ")
    assert "(ConnectionResetError: [Errno 104] Connection reset by peer (wandb-core is gone))" in warning
    assert len(logged) == 1
