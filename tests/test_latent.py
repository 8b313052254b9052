"""What a latent model's codes carry: active units, KL per unit, the linear probe, genctl encode."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import genctl
from genctl.errors import GenctlError
from genctl.eval.latent import active_units, codes, collapse_warning, latent_summary, probe, unit_activity
from genctl.models.vae import VAE
from tests.conftest import TINY, one_line_error
from tests.test_hvae import binary_images, hvae


def refusal(cli, *args: str) -> str:
    """The one line (exit 2) that refuses ``genctl *args``."""
    code, _, err = cli(*args)
    return one_line_error(code, err)


def linear_vae(latent_dim: int, sigma: float) -> VAE:
    """genctl's VAE with no hidden layer on 4x4 intensities: a linear encoder and decoder."""
    return VAE((1, 4, 4), False, "mlp", latent_dim, [], [], "elu", "stride", "gaussian", 1, sigma)


def test_active_units_count_the_units_whose_posterior_mean_varies():
    g = torch.Generator().manual_seed(0)
    means = torch.zeros(1000, 8)
    means[:, [1, 4, 6]] = torch.randn(1000, 3, generator=g) * torch.tensor([0.2, 1.0, 3.0])  # variances .04, 1, 9
    means[:, [0, 2]] = 5 + 0.05 * torch.randn(1000, 2, generator=g)  # an offset, variance .0025: not active
    activity = unit_activity(means)
    torch.testing.assert_close(activity, means.var(0, correction=0))
    assert active_units(means) == 3
    assert active_units(means, threshold=0.1) == 2


def test_a_vae_whose_encoder_ignores_its_input_has_no_active_units(digits, one_thread):
    model = VAE((1, 28, 28), True, "mlp", 6, [16], [], "elu", "stride", "logistic", 1, 0.1)
    for layer in model.encoder.modules():
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.normal_(layer.bias)
    means, logvars = codes(model, digits.fixed("test")[:300], 64)
    assert means.shape == logvars.shape == (300, 6)
    assert active_units(means) == 0
    found = latent_summary(means, logvars)
    assert found["active_units"] == 0 and len(found["kl_per_unit"]) == 6
    assert "only 0 of 6 latent units are active" in collapse_warning(found, "the test split")


@pytest.mark.parametrize("rank", [1, 3])
def test_a_linear_vae_trained_on_rank_r_data_keeps_r_active_units(rank, one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, rank, generator=g))[0]
    x = (0.5 + torch.randn(256, rank, generator=g) @ basis.T).view(-1, 1, 4, 4)  # x = W z, z in R^rank
    model = linear_vae(latent_dim=6, sigma=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(600):
        log_px_z, kl = model.elbo_terms(x)
        loss = (kl.sum(1) - log_px_z).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    means, logvars = codes(model, x, 100)
    activity = unit_activity(means)
    assert active_units(means) == rank, activity
    assert sorted(activity.tolist())[-rank] > 0.5  # the used units carry the data's unit variance, the rest nothing
    kl = latent_summary(means, logvars)["kl_per_unit"]
    assert sum(v > 0.1 for v in kl) == rank, kl  # collapsed units cost no KL


def test_a_hierarchical_vae_reports_its_top_groups_units_and_their_kl(one_thread):
    model = hvae().eval()  # 4 groups, the top one 2 channels of 2x2
    x = binary_images(40)
    means, logvars = codes(model, x, 16)
    assert means.shape == logvars.shape == (40, math.prod(model.group_shapes[0])) == (40, 8)
    with torch.no_grad():
        top_kl = model.elbo_terms(x)[1][:, 0]  # the top group's KL against its N(0, I) prior: no sample involved
    found = latent_summary(means, logvars)
    assert found["kl_latent"] == pytest.approx(top_kl.mean().item(), rel=1e-4)
    assert found["latent_units"] == 8 and len(found["kl_per_unit"]) == 8


def test_a_conditional_vae_encodes_each_image_with_its_label(one_thread):
    torch.manual_seed(0)
    model = VAE((1, 4, 4), False, "mlp", 3, [8], [], "elu", "stride", "gaussian", 1, 0.3, num_classes=3)
    x = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    zeros, ones = torch.zeros(10, dtype=torch.long), torch.ones(10, dtype=torch.long)
    as_zero = codes(model, x, 4, zeros)[0]
    assert not torch.equal(as_zero, codes(model, x, 4, ones)[0])  # q(z | x, y): the label moves the code
    assert torch.equal(genctl.encode(model, x, zeros)[0], as_zero)
    with pytest.raises(GenctlError, match="labels"):
        genctl.encode(model, x)


def separable_codes(n: int, units: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes on unit scales from 0.01 to 10 (what standardization is for) whose class is the
    argmax of ``classes`` orthonormal projections of the rescaled codes: linearly separable, and
    the scores are independent standard normals, so the classes are the same size."""
    scales = torch.logspace(-2, 1, units)
    projections = torch.linalg.qr(torch.randn(units, classes, generator=torch.Generator().manual_seed(99)))[0]
    z = torch.randn(n, units, generator=torch.Generator().manual_seed(seed))
    return z * scales, (z @ projections).argmax(1)


def test_the_probe_reads_separable_classes_and_only_guesses_shuffled_ones(one_thread):
    train_z, train_y = separable_codes(4000, 16, 5, seed=0)
    test_z, test_y = separable_codes(2000, 16, 5, seed=1)
    assert probe(train_z, train_y, test_z, test_y, steps=100, seed=0) > 0.95
    guesses = []  # fit to shuffled labels: a random linear map, whose test accuracy is chance give or take a few points
    for seed in range(3):
        shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))]
        guesses.append(probe(train_z, shuffled, test_z, test_y, steps=100, seed=0))
    assert abs(sum(guesses) / 3 - 1 / 5) < 0.05 and max(guesses) < 0.3, guesses


def test_eval_files_active_units_and_the_probe_and_compare_shows_them(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", *TINY, f"hydra.run.dir={run}")
    assert code == 0, err
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["latent_units"] == 4 and 0 <= test["active_units"] <= 4 and len(test["kl_per_unit"]) == 4
    assert abs(sum(test["kl_per_unit"]) - test["kl_latent"]) < 1e-3

    code, out, err = cli("eval", f"ckpt={run}", "eval.metrics=[nll,probe]", "eval.k=2")
    assert code == 0, err
    assert f"active_units {test['active_units']}; latent_units 4" in out and "KL per latent unit (nats):" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test@best.pt"]["active_units"] == test["active_units"]
    probed = metrics["probe_test@best.pt"]
    assert 0.3 < probed["probe_accuracy"] <= 1 and probed["probe_chance"] < 0.2  # a one-second VAE's codes beat guessing
    assert probed["probe_train_images"] == 1800  # the 2,000 train digits less the 200 of the validation split

    code, out, err = cli("compare", str(run), "--no-figure")
    assert code == 0, err
    header, _, row = out.splitlines()[:3]
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
    assert cells["au"] == str(test["active_units"]) and cells["latent_units"] == "4"
    assert float(cells["probe_acc"]) == pytest.approx(probed["probe_accuracy"], abs=1e-3)


def test_training_warns_when_most_latent_units_collapsed(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", *TINY, "loss.beta=100", f"hydra.run.dir={run}")  # the KL outweighs the image
    assert code == 0, err
    assert "warning: only 0 of 4 latent units are active on the validation split" in out
    assert json.loads((run / "metrics.json").read_text())["test"]["active_units"] == 0
    code, out, err = cli("train", *TINY, f"hydra.run.dir={tmp_path / 'fair'}")
    assert code == 0 and "latent units are active" not in out, err


def test_encode_writes_the_same_codes_for_a_run_and_its_export(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("train", *TINY, f"hydra.run.dir={run}")[0] == 0
    assert cli("export", f"ckpt={run}")[0] == 0
    code, out, err = cli("encode", f"ckpt={run}")
    assert code == 0, err
    from_run = load_file(run / "codes_test.safetensors")
    code, _, err = cli("encode", f"ckpt={run / 'export'}", f"out={tmp_path / 'exported.safetensors'}")
    assert code == 0, err
    from_export = load_file(tmp_path / "exported.safetensors")
    assert set(from_run) == set(from_export) == {"mean", "logvar", "label"}
    for name in from_run:
        assert torch.equal(from_run[name], from_export[name]), name
    data = genctl.dataset(run)
    assert from_run["mean"].shape == from_run["logvar"].shape == (len(data.test), 4)
    assert torch.equal(from_run["label"], data.labels["test"])
    mean, logvar = genctl.encode(genctl.load(run), data.fixed("test"))
    assert torch.equal(mean, from_run["mean"]) and torch.equal(logvar, from_run["logvar"])

    code, _, err = cli("encode", f"ckpt={run}", "split=val")
    assert code == 0, err
    assert len(load_file(run / "codes_val.safetensors")["label"]) == len(data.val)


def test_an_autoencoder_encodes_its_codes_without_a_variance(cli, tmp_path):
    run = tmp_path / "ae"
    assert cli("train", *TINY, "model=ae", f"hydra.run.dir={run}")[0] == 0
    assert "active_units" in json.loads((run / "metrics.json").read_text())["test"]
    code, _, err = cli("encode", f"ckpt={run}", "split=val")
    assert code == 0, err
    assert set(load_file(run / "codes_val.safetensors")) == {"mean", "label"}


def test_what_has_no_codes_or_no_labels_is_refused_in_one_line_before_any_work(cli, tmp_path):
    ar = tmp_path / "fvsbn"
    fvsbn = ["model=fvsbn", "debug=fast", "trainer.max_steps=2", "trainer.num_samples=0"]
    assert cli("train", *fvsbn, f"hydra.run.dir={ar}")[0] == 0
    before = (ar / "metrics.json").read_text()
    for args in (["encode", f"ckpt={ar}"], ["eval", f"ckpt={ar}", "eval.metrics=[nll,probe]"]):
        assert "has no latent space" in refusal(cli, *args)
    assert (ar / "metrics.json").read_text() == before and not list(ar.glob("codes_*"))
    with pytest.raises(GenctlError, match="has no latent space"):
        genctl.encode(genctl.load(ar), torch.zeros(2, 1, 28, 28))

    folder = tmp_path / "unlabelled"  # an image folder without class sub-folders: every image is class 0
    folder.mkdir()
    for i in range(30):
        Image.new("L", (8, 8), 8 * i).save(folder / f"{i}.png")
    run = tmp_path / "run"
    dataset = ["dataset=image_folder", f"dataset.root={folder}", "dataset.image_size=8", "dataset.channels=1"]
    sizes = ["dataset.test_size=5", "dataset.val_size=5"]
    assert cli("train", *TINY, *dataset, *sizes, f"hydra.run.dir={run}")[0] == 0
    before = (run / "metrics.json").read_text()
    assert "has no class labels" in refusal(cli, "eval", f"ckpt={run}", "eval.metrics=[probe]")
    assert (run / "metrics.json").read_text() == before

    for args, expected in (
        (["encode", f"ckpt={run}", "split=dev"], "split='dev' is not valid"),
        (["encode", f"ckpt={run}", "batch_size=0"], "batch_size must be >= 1"),
        (["encode", f"ckpt={run}", f"out={run / 'best.pt' / 'codes.safetensors'}"], "is not a folder"),
        (["eval", f"ckpt={run}", "eval.probe_steps=0"], "probe_steps must be >= 1"),
    ):
        assert expected in refusal(cli, *args)
    model = genctl.load(run)
    for x, batch_size, expected in ((torch.zeros(2, 1, 9, 9), None, "shape"), (torch.zeros(2, 1, 8, 8), 0, "batch_size=0")):
        with pytest.raises(GenctlError, match=expected):
            genctl.encode(model, x, batch_size=batch_size)
