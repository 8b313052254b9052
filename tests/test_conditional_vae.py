"""The class-conditional VAE (model.num_classes > 0): labels in every pass, a conditional NLL, samples of a chosen class."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

import genctl
from genctl.config import config_dir
from genctl.errors import GenctlError
from genctl.eval.features import feature_extractor
from genctl.models import build_model
from genctl.models.base import is_conditional
from genctl.models.vae import VAE


def small_vae(arch: str, num_classes: int) -> VAE:
    return VAE((1, 8, 8), True, arch, 2, [8], [4], "elu", "stride", "logistic", 1, 0.1, num_classes)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_the_label_reaches_the_encoder_and_the_decoder(arch):
    torch.manual_seed(0)
    model = small_vae(arch, 3).eval()
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(model.encode(x, zeros)[0], model.encode(x, ones)[0])  # q(z | x, y)
    z = torch.randn(4, 2)
    assert not torch.allclose(model.render(z, zeros), model.render(z, ones))  # p(x | z, y)
    with pytest.raises(GenctlError, match=r"this VAE is class-conditional \(num_classes=3\): pass the images' labels y"):
        model.code(x)
    with pytest.raises(ValueError, match="labels given to a model with num_classes=0"):
        small_vae(arch, 0).code(x, zeros)
    plain = small_vae(arch, 0)  # the label's inputs are all the conditional model adds
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 3 * 8 + 3 * 8  # one-hot of 3 classes into the first dense layer of each network


def test_each_importance_sample_is_decoded_with_its_own_images_label(monkeypatch):
    """With a posterior of (almost) no spread every draw sits at its image's posterior mean, so the
    label the decoder gets with each draw can be checked against the image the draw came from."""
    torch.manual_seed(0)
    model = small_vae("mlp", 3).eval()
    head = model.encoder.net[-1][-1]  # the last Linear: means, then log-variances
    with torch.no_grad():
        head.weight[2:] = 0
        head.bias[2:] = -30
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    y = torch.tensor([0, 2, 1, 2])
    seen = []
    decode = VAE.decode
    monkeypatch.setattr(VAE, "decode", lambda self, z, labels=None: seen.append((z, labels)) or decode(self, z, labels))
    weights = model.log_weights(x, 3, y=y)
    (z, labels), means = seen[0], model.encode(x, y)[0]
    assert weights.shape == (3, 4) and len(z) == len(labels) == 12
    came_from = torch.cdist(z, means).argmin(1)  # the image whose posterior each draw sits at
    assert torch.equal(labels, y[came_from])
    assert not torch.allclose(weights, model.log_weights(x, 3, y=y.roll(1)), atol=1e-1)


def test_runs_stored_before_num_classes_load_as_unconditional():
    shipped = OmegaConf.load(config_dir() / "model" / "vae.yaml")
    assert shipped.num_classes == 0
    stored = {k: v for k, v in shipped.items() if k not in ("defaults", "num_classes")}
    model = build_model(OmegaConf.create(stored), (1, 28, 28), True)
    assert model.num_classes == 0 and not is_conditional(model)


def test_a_conditional_vae_draws_the_class_it_is_given(cli, capsys, tmp_path, one_thread):
    """A small conditional MLP VAE trained on the embedded digits for ~20 s: genctl's shipped MNIST
    classifier reads its samples as the class they were drawn for far above chance (0.1)."""
    run = tmp_path / "cvae"
    args = ["debug=fast", "model.arch=mlp", "model.hidden=[256]", "model.latent_dim=2", "model.num_classes=10"]
    code, _, err = cli("train", *args, "trainer.epochs=20", "trainer.batch_size=32", f"hydra.run.dir={run}")
    assert code == 0, err
    test = json.loads((run / "metrics.json").read_text())["test"]
    for name in ("nll_elbo", "nll_iwae"):  # scored with each image's label: -log p(x | y)
        assert test[name]["estimator"].endswith(", conditional on the class label")

    classifier = feature_extractor("digits").net
    code, _, err = cli("sample", f"ckpt={run}", "n=200", "nrow=10", "save_tensor=true")  # classes in turn
    assert code == 0, err
    drawn = classifier(torch.load(run / "samples" / "prior.pt")).argmax(1)
    rate = (drawn == torch.arange(200) % 10).float().mean().item()
    code, _, err = cli("sample", f"ckpt={run}", "n=50", "label=3", "save_tensor=true", f"out={tmp_path / 'threes.png'}")
    assert code == 0, err
    threes = (classifier(torch.load(tmp_path / "threes.pt")).argmax(1) == 3).float().mean().item()
    measured = f"classified as the class drawn: {rate:.3f} (classes in turn), {threes:.3f} (label=3); chance 0.1"
    with capsys.disabled():  # the cli fixture captures the rest
        print(measured)
    assert rate >= 0.5 and threes >= 0.5, measured

    for mode in ("reconstruct", "interpolate", "traverse", "map"):  # every picture passes the labels
        code, _, err = cli("sample", f"ckpt={run}", f"mode={mode}", "n=16")
        assert code == 0, err
    code, _, err = cli("eval", f"ckpt={run}", "eval.k=2")
    assert code == 0, err
    filed = json.loads((run / "metrics.json").read_text())["test@best.pt"]["nll_iwae"]
    assert filed["estimator"] == "IWAE bound, k=2, conditional on the class label"

    code, _, err = cli("export", f"ckpt={run}")
    assert code == 0, err
    exported, data = genctl.load(run / "export"), genctl.dataset(run)
    assert is_conditional(exported)
    with pytest.raises(GenctlError, match="class-conditional: pass the images' labels"):
        genctl.nll(exported, data.fixed("test")[:8], k=2)
    scores = genctl.nll(exported, data.fixed("test")[:8], data.labels["test"][:8], k=2)
    assert scores["nll_iwae"]["estimator"] == "IWAE bound, k=2, conditional on the class label"
    trained, sevens = genctl.load(run), torch.full((4,), 7)
    torch.manual_seed(0)
    drawn = exported.sample(4, y=sevens)
    torch.manual_seed(0)
    assert torch.equal(drawn, trained.sample(4, y=sevens))
