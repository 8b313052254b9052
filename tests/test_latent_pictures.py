"""Pictures of a latent space: traversals (one unit per row), the map of test codes by class, TensorBoard's projector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import genctl
from genctl.errors import GenctlError
from genctl.eval.latent import codes, unit_activity
from genctl.eval.pictures import MAP_PIXELS, project, traversal
from genctl.eval.sampling import partners
from tests.conftest import TINY, one_line_error
from tests.test_api import train

MAP = ["trainer.latent_map=300"]  # debug=fast draws no map: these runs ask for one


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("vae") / "run", *TINY, *MAP)


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("ae") / "run", *TINY, "model=ae")


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("made") / "run", "model=made", "debug=fast", "model.hidden=[16]")


@pytest.fixture(scope="module")
def unlabelled_run(tmp_path_factory) -> Path:
    """A VAE on an image folder without class sub-folders: every image is class 0."""
    folder = tmp_path_factory.mktemp("flat")
    g = torch.Generator().manual_seed(0)
    for i in range(24):
        Image.fromarray((torch.rand(8, 8, generator=g) * 255).byte().numpy()).save(folder / f"{i}.png")
    flat = ["dataset=image_folder", f"dataset.root={folder}", "dataset.image_size=8", "dataset.channels=1"]
    return train(folder / "run", *TINY, *flat, "dataset.test_size=8", "dataset.val_size=4", *MAP)


def test_a_traversal_moves_each_row_along_its_own_unit_only():
    g = torch.Generator().manual_seed(0)
    base, scale = torch.randn(6, generator=g), torch.rand(6, generator=g) + 0.5
    units = torch.tensor([4, 0, 5])
    z = traversal(base, units, steps=7, span=3.0, scale=scale).view(3, 7, 6)
    for row, unit in enumerate(units.tolist()):
        others = [u for u in range(6) if u != unit]
        assert torch.equal(z[row][:, others], base[others].expand(7, -1))  # every other unit as in the base code
        torch.testing.assert_close(z[row, :, unit], base[unit] + torch.linspace(-3, 3, 7) * scale[unit])


@pytest.mark.parametrize("run_name, span", [("vae_run", 2.0), ("ae_run", 1.0)])
def test_sample_traverse_renders_the_most_active_units_around_one_code(run_name, span, request, cli, monkeypatch):
    """The codes genctl sample hands the decoder: one row per unit, most active first, that unit
    alone moving from -span to +span (prior std; an autoencoder's units in their own spread)."""
    run = request.getfixturevalue(run_name)
    model = genctl.load(run)
    rendered: list[torch.Tensor] = []
    original = type(model).render

    def spy(self, z, y=None):
        rendered.append(torch.tensor(z.tolist()))
        return original(self, z, y)

    monkeypatch.setattr(type(model), "render", spy)
    args = ["mode=traverse", "n=30", "nrow=5", "image=7", f"span={span}", "save_tensor=true"]
    code, _, err = cli("sample", f"ckpt={run}", *args)
    assert code == 0, err
    (z,) = rendered
    test = genctl.dataset(run).fixed("test")
    means, logvars = codes(model, test, 500)
    activity = unit_activity(means)
    units = activity.argsort(descending=True)[:4]  # 6 rows asked, 4 units in the code
    z = z.view(4, 5, 4)
    with torch.inference_mode():
        base = model.code(test[7:8])[0]
    scale = torch.ones(4) if logvars is not None else activity.sqrt()  # prior std; an autoencoder's own spread
    for row, unit in enumerate(units.tolist()):
        others = [u for u in range(4) if u != unit]
        torch.testing.assert_close(z[row][:, others], base[others].expand(5, -1))
        torch.testing.assert_close(z[row, :, unit], base[unit] + torch.linspace(-span, span, 5) * scale[unit])
    images = torch.load(run / "samples" / "traverse.pt")
    assert images.shape == (20, 1, 28, 28)
    assert Image.open(run / "samples" / "traverse.png").size == (5 * 30 + 2, 4 * 30 + 2)  # 28-pixel images, 2 of padding


def test_pca_of_codes_on_a_plane_recovers_the_plane():
    """Codes in 16 units that lie on a tilted, shifted plane: the map shows the plane as it is
    (distances between points kept), its wider direction first."""
    g = torch.Generator().manual_seed(0)
    plane = torch.randn(400, 2, generator=g) * torch.tensor([3.0, 1.0])
    basis = torch.linalg.qr(torch.randn(16, 2, generator=g))[0]
    means = plane @ basis.T + torch.randn(16, generator=g) + 1e-4 * torch.randn(400, 16, generator=g)
    points, axes = project(means)
    centred = plane - plane.mean(0)
    exact = "donot_use_mm_for_euclid_dist"
    distances = torch.cdist(points, points, compute_mode=exact), torch.cdist(centred, centred, compute_mode=exact)
    torch.testing.assert_close(*distances, atol=2e-3, rtol=0)  # the noise off the plane moves them by 1e-4 per unit
    spread = points.var(0)
    assert spread[0] > 4 * spread[1]  # the plane's long direction first
    share = 100 * spread / spread.sum()
    assert axes == (f"PC1 ({share[0]:.0f}% of the variance)", f"PC2 ({share[1]:.0f}% of the variance)")
    assert torch.equal(project(means)[0], points)  # the sign of each component is fixed
    two = torch.randn(50, 2, generator=g)
    assert torch.equal(project(two)[0], two) and project(two)[1] == ("z1", "z2")  # a 2-unit code is the map


def test_training_writes_the_latent_map_and_the_projector(vae_run):
    png = vae_run / "latent_map.png"
    assert Image.open(png).size == (MAP_PIXELS, MAP_PIXELS)
    assert str(png) in json.loads((vae_run / "metrics.json").read_text())["images"]
    embedding = vae_run / "tb" / "00002" / "latent_codes"  # two steps
    rows = (embedding / "tensors.tsv").read_text().splitlines()
    assert len(rows) == 300 and all(len(row.split("\t")) == 4 for row in rows)  # the 4-unit codes of 300 test images
    labels = genctl.dataset(vae_run).labels["test"][:300].tolist()
    assert (embedding / "metadata.tsv").read_text().split() == [str(c) for c in labels]
    assert Image.open(embedding / "sprite.png").size == (18 * 28, 18 * 28)  # 300 thumbnails, 18 a row
    assert "latent_codes" in (vae_run / "tb" / "projector_config.pbtxt").read_text()


def test_sample_map_draws_every_test_code(vae_run, cli):
    code, _, err = cli("sample", f"ckpt={vae_run}", "mode=map", "save_tensor=true")
    assert code == 0, err
    assert Image.open(vae_run / "samples" / "map.png").size == (MAP_PIXELS, MAP_PIXELS)
    assert torch.load(vae_run / "samples" / "map.pt").shape == (500, 2)  # the digits' 500 test images


def test_no_map_for_runs_that_did_not_ask_or_models_without_codes(ae_run, made_run):
    assert not (ae_run / "latent_map.png").exists()  # debug=tiny: trainer.latent_map=0
    assert not (made_run / "latent_map.png").exists()


@pytest.mark.parametrize("mode", ["traverse", "map"])
def test_pictures_of_a_model_without_a_latent_space_are_one_line(made_run, cli, mode):
    code, _, err = cli("sample", f"ckpt={made_run}", f"mode={mode}")
    assert "model 'made' has no latent space; use mode=prior" in one_line_error(code, err)


def test_a_map_needs_class_labels(unlabelled_run, cli):
    assert not (unlabelled_run / "latent_map.png").exists()  # asked for, but there is no class to colour by
    assert "no latent map: dataset 'image_folder' has no class labels" in (unlabelled_run / "train.log").read_text()
    code, _, err = cli("sample", f"ckpt={unlabelled_run}", "mode=map")
    assert "dataset 'image_folder' has no class labels (at most one class)" in one_line_error(code, err)
    code, _, err = cli("sample", f"ckpt={unlabelled_run}", "mode=traverse", "n=8", "nrow=4")  # needs no labels
    assert code == 0, err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["mode=traverse", "image=500"], "image=500 is past the test split's 500 images; pick 0..499"),
        (["mode=traverse", "span=0"], "span must be > 0 and finite"),
        (["label=3"], "model 'vae' is not class-conditional; drop label="),
    ],
)
def test_bad_sample_options_are_one_line(vae_run, cli, args, expected):
    code, _, err = cli("sample", f"ckpt={vae_run}", *args)
    assert expected in one_line_error(code, err)


def test_a_conditional_interpolation_stays_within_each_class():
    assert partners(torch.tensor([3, 1, 3, 7, 1, 3, 1]), 2).tolist() == [2, 4]  # the first later 3, the first later 1
    assert partners(torch.tensor([0, 0, 1, 0, 0, 1]), 3).tolist() == [3, 4, 5]  # each end used once
    with pytest.raises(GenctlError, match="test image 1 has no later test image of its class 2"):
        partners(torch.tensor([0, 2, 0, 1]), 2)
