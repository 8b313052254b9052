"""Sample quality (genctl/eval/quality.py, features.py): the shipped classifiers, FID, precision/recall, genctl eval."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf

from genctl.data import load_dataset
from genctl.errors import GenctlError
from genctl.eval.features import feature_extractor
from genctl.eval.quality import calibration, draw, fid, precision_recall, quality, sample_quality
from genctl.models.base import build_model
from tests.conftest import TINY, one_line_error, real_data

TINY_VAE = {"name": "vae", "arch": "mlp", "hidden": [32], "latent_dim": 4, "channels": [], "activation": "elu"}
TINY_VAE |= {"downsample": "stride", "observation": "logistic", "mixtures": 1, "obs_sigma": 0.1}


def digits(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The real MNIST digits shipped in the package (500 test, 1,800 train): no data folder needed."""
    data = load_dataset(OmegaConf.create({"name": "digits", "binarize": "none", "val_size": 200, "split_seed": 0}))
    return data.fixed(split), data.labels[split]


def accuracy(family: str, x: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        return (feature_extractor(family).net(x).argmax(1) == labels).float().mean().item()


def test_the_packaged_mnist_classifier_reads_real_digits_grey_and_binarized():
    x, labels = digits()
    assert accuracy("digits", x, labels) > 0.97
    assert accuracy("binarized_mnist", torch.bernoulli(x, generator=torch.Generator().manual_seed(0)), labels) > 0.95
    assert feature_extractor("dynamic_mnist") is feature_extractor("mnist")  # one family, loaded once
    assert feature_extractor("mnist")(x[:10]).shape == (10, 128)


def test_the_packaged_fashion_classifier_reads_real_clothes():
    root = real_data("FashionMNIST")
    cfg = {"name": "fashion_mnist", "root": str(root), "binarize": "none", "val_size": 0, "split_seed": 0}
    data = load_dataset(OmegaConf.create(cfg))
    x, labels = data.fixed("test")[:1000], data.labels["test"][:1000]
    assert accuracy("fashion_mnist", x, labels) > 0.85
    assert accuracy("mnist", x, labels) < 0.5  # the other family's classifier: the right one was picked


def test_datasets_without_a_classifier_are_one_clear_line():
    with pytest.raises(GenctlError, match="no feature extractor ships for dataset 'cifar10'.*mnist.*fashion_mnist"):
        feature_extractor("cifar10")
    with pytest.raises(GenctlError, match="takes 1x28x28 images, got 3x32x32"):
        feature_extractor("mnist")(torch.rand(4, 3, 32, 32))


def test_a_set_against_itself_scores_fid_zero_and_full_precision_recall():
    x, _ = digits()
    q = quality(x, x, feature_extractor("mnist"))
    assert q["fid_clf"] == pytest.approx(0, abs=1e-3)
    assert q["precision_clf"] == q["recall_clf"] == 1.0
    assert "classifier-feature FID" in q["feature_space"] and "not Inception FID" in q["feature_space"]


def test_fid_grows_with_the_noise_added_to_real_images():
    x, _ = digits()
    generator = torch.Generator().manual_seed(0)
    noisy = [(x + std * torch.randn(x.shape, generator=generator)).clamp(0, 1) for std in (0.05, 0.1, 0.2, 0.4)]
    extractor = feature_extractor("mnist")
    fids = [fid(extractor(x), extractor(y)) for y in noisy]
    assert fids == sorted(fids) and fids[0] > 0.01 and fids[-1] > 10 * fids[0], fids


def test_precision_measures_realism_and_recall_coverage():
    cluster = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    real = torch.cat([cluster, cluster.flip(0) + 50])  # two modes, far apart
    precision, recall = precision_recall(real, cluster)  # realistic samples of one mode: precise, half the recall
    assert (precision, recall) == (1.0, 0.5)
    far = real + 100  # every sample off the data: neither
    assert precision_recall(real, far) == (0.0, 0.0)
    precision, recall = precision_recall(real, torch.cat([cluster, far[:200]]))  # half realistic, half not
    assert (precision, recall) == (0.5, 0.5)


def test_sample_quality_repeats_for_a_seed():
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(TINY_VAE), (1, 28, 28), binary=True)
    x, _ = digits()
    extractor = feature_extractor("mnist")
    first, again = (sample_quality(model, x, extractor, n=100, seed=3, batch_size=30) for _ in range(2))
    other = sample_quality(model, x, extractor, n=100, seed=4, batch_size=30)
    assert first == again and first["fid_clf"] != other["fid_clf"]
    assert draw(model, 10, seed=3, batch_size=4).unique().tolist() == [0.0, 1.0]  # drawn from p(x | z), not its mean
    assert first["n_fake"] == first["n_real"] == 100
    assert 0 <= first["precision_clf"] <= 1 and 0 <= first["recall_clf"] <= 1


def test_calibration_floor_is_far_below_an_untrained_models_ceiling():
    root = real_data("MNIST")
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(TINY_VAE), (1, 28, 28), binary=True)
    dataset = {"name": "mnist", "root": str(root), "binarize": "static", "val_size": 1000, "split_seed": 0}
    ends = calibration(OmegaConf.create(dataset), model, n=300, seed=0)
    assert ends["floor"]["n_real"] == ends["ceiling"]["n_fake"] == 300
    assert ends["floor"]["fid_clf"] * 20 < ends["ceiling"]["fid_clf"]
    assert (
        ends["floor"]["recall_clf"] > 0.5 > ends["ceiling"]["recall_clf"]
    )  # (noise can land in an outlier's wide ball: precision)
    with pytest.raises(GenctlError, match="mnist or fashion_mnist, not digits"):
        calibration(OmegaConf.create({**dataset, "name": "digits"}), model, n=300)


def test_eval_files_sample_quality_beside_the_nll_and_compare_shows_it(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("train", *TINY, f"hydra.run.dir={run}")[0] == 0
    code, out, err = cli("eval", f"ckpt={run}", "eval.metrics=[nll,fid]", "eval.num_samples=100", "eval.k=2")
    assert code == 0, err
    record = json.loads((run / "metrics.json").read_text())
    assert record["test@best.pt"]["nll_iwae"]["estimator"] == "IWAE bound, k=2"
    q = record["sample_quality_test@best.pt"]
    assert q["fid_clf"] > 0 and 0 <= q["precision_clf"] <= 1 and 0 <= q["recall_clf"] <= 1
    assert q["n_fake"] == q["n_real"] == 100 and "not Inception FID" in q["feature_space"]
    assert "100 samples (seed 0) against 100 test images" in record["sample_quality_test@best.pt_split"]
    code, out, err = cli("compare", str(run), "--no-figure")
    assert code == 0, err
    assert "| fid_clf | precision_clf | recall_clf | fid_samples |" in out.splitlines()[0] and "not Inception FIDs" in out
    row = next(csv.DictReader(open(run / "compare.csv")))
    assert float(row["fid_clf"]) == pytest.approx(q["fid_clf"]) and row["fid_samples"] == "100"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["eval.metrics=[nll,bleu]"], "metrics=['nll', 'bleu'] is not valid: choose one or more of nll, fid"),
        (["eval.metrics=[]"], "metrics=[] is not valid"),
        (["eval.num_samples=3"], "num_samples must be >= 4, got 3"),
    ],
)
def test_bad_metric_options_are_one_line(cli, args, expected):
    code, _, err = cli("eval", "ckpt=/x.pt", *args)
    assert expected in one_line_error(code, err)


def test_fid_of_a_model_that_cannot_sample_is_one_line(cli, tmp_path):
    run = tmp_path / "ae"
    assert cli("train", "model=ae", *TINY, f"hydra.run.dir={run}")[0] == 0
    code, _, err = cli("eval", f"ckpt={run}", "eval.metrics=[fid]")
    assert "model 'ae' cannot draw samples, so eval.metrics cannot hold fid" in one_line_error(code, err)


def test_training_refuses_fid_in_its_final_test_in_one_line(cli, tmp_path):
    code, _, err = cli("train", *TINY, "eval.metrics=[nll,fid]", f"hydra.run.dir={tmp_path / 'run'}")
    assert "for sample quality run genctl eval ckpt=RUN eval.metrics=[nll,fid]" in one_line_error(code, err)
    assert not (tmp_path / "run" / "last.pt").exists()
