"""genctl.load / genctl.dataset / genctl.nll: a run's model in Python, scored exactly as genctl eval scores it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

import genctl
from genctl.cli.main import main
from genctl.config import config_dir
from genctl.errors import GenctlError
from genctl.models import build_model
from genctl.models.base import ExactLikelihood, LatentLikelihood, Reconstructs
from genctl.runs.checkpoint import load_checkpoint
from tests.conftest import TINY

# A latent-variable model scored with IWAE (its moving average is what load must give) and an autoregressive one.
MODELS = {
    "vae": [*TINY, "trainer.ema=0.5"],
    "made": ["model=made", "debug=fast", "model.hidden=[32]"],
}


def train(folder: Path, *args: str) -> Path:
    """Train a run of two steps into ``folder`` in-process: the ``cli`` fixture lives for one test,
    and these runs serve all the tests of a module. One thread: see the ``one_thread`` fixture."""
    argv, threads = sys.argv, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder.parent)
            code = main(["train", *args, "trainer.max_steps=2", "eval.k=3", f"hydra.run.dir={folder}"])
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    assert code == 0, f"training {args} failed"
    return folder


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("vae") / "run", *MODELS["vae"])


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("made") / "run", *MODELS["made"])


@pytest.fixture(params=["vae_run", "made_run"])
def run(request) -> Path:
    return request.getfixturevalue(request.param)


def test_load_gives_the_evaluated_model_that_samples_and_scores_as_genctl_eval(run, cli, one_thread):
    code, _, err = cli("eval", f"ckpt={run}", "eval.k=5")
    assert code == 0, err
    filed = json.loads((run / "metrics.json").read_text())["test@best.pt"]

    model = genctl.load(run)
    assert not model.training and model.device == torch.device("cpu")
    state = load_checkpoint(run / "best.pt")
    weights = state["ema"]["weights"] if "ema" in state else state["model"]  # what genctl eval scores
    assert all(torch.equal(value, weights[name]) for name, value in model.state_dict().items())
    assert "ema" not in state or any(not torch.equal(state["model"][name], weights[name]) for name in weights)

    x = genctl.dataset(run).fixed("test")
    ours = genctl.nll(model, x, k=5)  # chunk, batch_size and seed: configs/eval/default.yaml's, as genctl eval's
    assert ours.keys() == filed.keys()
    for name, value in filed.items():
        if isinstance(value, dict):
            assert ours[name]["estimator"] == value["estimator"]
            assert ours[name]["nats"] == pytest.approx(value["nats"], rel=1e-12)
            assert ours[name]["bits_per_dim"] == pytest.approx(value["bits_per_dim"], rel=1e-12)
        else:
            assert ours[name] == pytest.approx(value, rel=1e-12)

    torch.manual_seed(0)
    images = model.sample(3, temperature=0.5)
    torch.manual_seed(0)
    assert torch.equal(images, model.sample(3, temperature=0.5))
    assert images.shape == (3, 1, 28, 28) and 0 <= images.min() and images.max() <= 1

    if isinstance(model, LatentLikelihood):
        assert isinstance(model, Reconstructs) and "ema" in state
        z = model.code(x[:4])
        assert model.render(z).shape == x[:4].shape == model.reconstruct(x[:4]).shape
        other_draws = genctl.nll(model, x, k=5, chunk=1)["nll_iwae"]["nats"]  # the comparison above can tell
        assert other_draws != pytest.approx(filed["nll_iwae"]["nats"], rel=1e-12)
        k = yaml.safe_load((config_dir() / "eval" / "default.yaml").read_text())["k"]
        assert genctl.nll(model, x[:1])["nll_iwae"]["estimator"] == f"IWAE bound, k={k}"
    else:
        assert isinstance(model, ExactLikelihood)
        assert ours["nll_exact"]["nats"] == pytest.approx(-model.log_prob(x).double().mean().item(), rel=1e-6)


def test_load_takes_a_checkpoint_file_and_says_what_is_missing(vae_run, tmp_path):
    from_file = genctl.load(vae_run / "last.pt")
    assert not from_file.training
    with pytest.raises(GenctlError, match="does not exist"):
        genctl.load(tmp_path / "nowhere")
    with pytest.raises(GenctlError, match="no checkpoint in"):
        genctl.load(tmp_path)
    with pytest.raises(GenctlError, match="k must be >= 1"):
        genctl.nll(from_file, torch.zeros(1, 1, 28, 28), k=0)


def test_a_class_conditional_model_is_scored_with_labels():
    cfg = {"name": "gated_pixelcnn", "channels": 4, "layers": 1, "kernel": 3, "head": 4, "num_classes": 3}
    model = build_model(OmegaConf.create(cfg), (1, 4, 4), True).eval()
    x = torch.randint(0, 2, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0)).float()
    with pytest.raises(GenctlError, match="class-conditional: pass the images' labels"):
        genctl.nll(model, x)
    labels = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        expected = -model.log_prob(x, labels).double().mean().item()
    assert genctl.nll(model, x, labels)["nll_exact"]["nats"] == pytest.approx(expected, rel=1e-6)
    unconditional = build_model(OmegaConf.create({**cfg, "num_classes": 0}), (1, 4, 4), True)
    assert genctl.nll(unconditional, x, labels) == genctl.nll(unconditional, x)  # labels are for conditional models only


def test_import_genctl_leaves_torch_for_first_use():
    code = "import sys, genctl; assert 'torch' not in sys.modules, 'import genctl imported torch'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert genctl.load is genctl.api.load and genctl.nll is genctl.api.nll and genctl.dataset is genctl.api.dataset
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        genctl.nope  # noqa: B018


def one_line(error: pytest.ExceptionInfo) -> str:
    """The message of a GenctlError the API raised: one line, as the CLI would print it."""
    message = str(error.value)
    assert "\n" not in message and message, message
    return message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (lambda x: x * 255, "holds values other than 0 and 1 (or NaN), outside this binary model's support"),
        (lambda x: x * float("nan"), "holds values other than 0 and 1 (or NaN)"),
        (lambda x: (x * 7).to(torch.uint8), "holds uint8 levels other than 0 and 255"),
        (lambda x: x[0], "x is one image of shape [1, 28, 28]; pass a batch of images [N, C, H, W], e.g. x[None]"),
        (lambda x: x.flatten(1), "x has shape [20, 784]; this model takes images [N, 1, 28, 28]"),
        (lambda x: torch.zeros(2, 1, 32, 32), "x has shape [2, 1, 32, 32]; this model takes images [N, 1, 28, 28]"),
        (lambda x: x[:0], "x holds no images"),
        (lambda x: x.long(), "x has dtype torch.int64; pass floats in [0, 1] or uint8 grey levels 0..255"),
        (lambda x: x.tolist(), "x is a Python list; pass images [N, C, H, W] as a tensor"),
        (lambda x: "runs/vae/run", "x is a path ('runs/vae/run'), not a tensor; pass images [N, C, H, W], e.g. genctl.dataset"),
        (lambda x: Path("test.pt"), "x is a path ('test.pt'), not a tensor"),
        (lambda x: x.numpy().astype(str), "x is a numpy array of <U"),
    ],
    ids=["x255", "nan", "uint8-levels", "one-image", "flat", "other-size", "empty", "int64", "list", "str", "path", "numpy-str"],
)
def test_nll_refuses_what_the_model_cannot_score_in_one_line(vae_run, given, expected):
    model = genctl.load(vae_run)
    x = genctl.dataset(vae_run).fixed("test")[:20]
    with pytest.raises(GenctlError) as error:
        genctl.nll(model, given(x), k=2)
    assert expected in one_line(error)


def test_nll_takes_numpy_float64_and_uint8_images_as_the_tensor_they_hold(vae_run):
    model = genctl.load(vae_run)
    x = genctl.dataset(vae_run).fixed("test")[:20]
    expected = genctl.nll(model, x, k=2)
    assert genctl.nll(model, x.numpy(), k=2) == expected
    assert genctl.nll(model, x.double(), k=2) == expected
    assert genctl.nll(model, (x * 255).to(torch.uint8), k=2) == expected  # grey levels, as the datasets hold them


def test_an_8bit_model_refuses_values_outside_its_range_and_labels_are_checked():
    cfg = {"name": "gated_pixelcnn", "channels": 4, "layers": 1, "kernel": 3, "head": 4, "num_classes": 3}
    model = build_model(OmegaConf.create(cfg), (1, 4, 4), False).eval()
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0)).mul(255).round().div(255)
    labels = torch.tensor([0, 1, 2, 0, 1])
    assert genctl.nll(model, x, labels)["nll_exact"]["nats"] > 0
    for bad, expected in [
        (x * 255, "holds values in [6, 254], outside the [0, 1] this model takes"),
        (x - 1, "outside the [0, 1] this model takes"),
    ]:
        with pytest.raises(GenctlError) as error:
            genctl.nll(model, bad, labels)
        assert expected in one_line(error)
    for bad, expected in [
        (labels.float(), "labels has dtype torch.float32; pass integer class labels"),
        (labels[:3], "labels has shape [3]; pass one class label per image, shape [5]"),
        (labels + 1, "labels holds classes 1..3; this model has classes 0..2"),
        (labels.tolist(), "labels is a Python list"),
    ]:
        with pytest.raises(GenctlError) as error:
            genctl.nll(model, x, bad)
        assert expected in one_line(error)
    with pytest.raises(GenctlError) as error:
        model.sample(2, y=torch.tensor([0, 5]))
    assert "y holds classes 0..5; this model has classes 0..2" in one_line(error)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((-1,), "n=-1 is not a number of images to draw; pass an int >= 1"),
        ((0,), "n=0 is not a number of images to draw"),
        ((1.5,), "n=1.5 is not a whole number of images"),
        ((True,), "n=True is not a whole number of images"),
        (("3",), "n='3' is not a whole number of images"),
        ((10**12,), "n=1000000000000 needs at least 3.14 PB of memory for images (3.14 kB each), more than this machine"),
        ((2, -1.0), "temperature=-1.0 is not valid; pass a number >= 0"),
        ((2, float("nan")), "temperature=nan is not valid"),
    ],
    ids=["negative", "zero", "float", "bool", "str", "too-many", "negative-temperature", "nan-temperature"],
)
def test_sample_refuses_what_is_not_a_number_of_images_in_one_line(run, args, expected):
    model = genctl.load(run)  # a latent-variable model and an autoregressive one: every model's own sample
    with pytest.raises(GenctlError) as error:
        model.sample(*args)
    assert expected in one_line(error)
    assert model.sample(2).shape == (2, 1, 28, 28)
