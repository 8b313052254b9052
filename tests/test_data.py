"""Readers for the standard on-disk layouts, splits, binarization and the batch iterator."""

from __future__ import annotations

import gzip
import pickle
import re
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from genctl.data import Batches, load_dataset
from genctl.data.idx import read_idx
from genctl.errors import GenctlError
from tests.conftest import TINY, one_line_error, real_data


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    (gzip.open if gz else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def dataset_cfg(**kw):
    base = {"binarize": "none", "val_size": 0, "split_seed": 0}
    return OmegaConf.create({**base, **kw})


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_plain_and_gzip(tmp_path, gz):
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    path = tmp_path / ("x.gz" if gz else "x")
    write_idx(path, array, gz)
    assert np.array_equal(read_idx(path), array)


def test_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 20)
    with pytest.raises(GenctlError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((4, 28, 28)), gz=False)
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-100])
    with pytest.raises(GenctlError, match="truncated"):
        read_idx(tmp_path / "cut")
    huge = bytes([0, 0, 0x08, 3]) + (2**32 - 1).to_bytes(4, "big") * 3 + b"\x00" * 64  # product overflows int64
    (tmp_path / "huge").write_bytes(huge)
    with pytest.raises(GenctlError, match="truncated"):
        read_idx(tmp_path / "huge")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (bytes([0, 0, 0x08, 255]) + (1).to_bytes(4, "big") * 255 + b"\x00", "its header announces 255 dimensions, not 1 to 3"),
        (bytes([0, 0, 0x08, 0]) + b"\x00", "its header announces 0 dimensions, not 1 to 3"),
        (bytes([0, 0, 0x08, 4]) + (1).to_bytes(4, "big") * 4 + b"\x00", "its header announces 4 dimensions, not 1 to 3"),
        (bytes([0, 0, 0x08, 1]) + (2).to_bytes(4, "big") + b"\x00" * 5, "its header says (2,), but 3 bytes follow that data"),
    ],
    ids=["ndim-255", "ndim-0", "ndim-4", "trailing-bytes"],
)
def test_an_idx_header_that_does_not_describe_the_file_is_refused_naming_it(tmp_path, header, expected):
    (tmp_path / "forged").write_bytes(header)
    with pytest.raises(GenctlError, match=re.escape(expected)) as refused:
        read_idx(tmp_path / "forged")
    assert str(refused.value).startswith(str(tmp_path / "forged")) and "\n" not in str(refused.value)


def mnist_files(root, train: np.ndarray, test: np.ndarray) -> None:
    """An MNIST layout under ``root`` holding these train and test images (and a label each)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, images in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz=False)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(len(images)) % 10, gz=False)


def test_mnist_flattened_to_one_row_is_refused_not_trained_on(cli, tmp_path):
    mnist_files(tmp_path / "data", np.zeros((20, 1, 784)), np.zeros((10, 1, 784)))
    code, _, err = cli("train", *TINY, "dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.val_size=5")
    line = one_line_error(code, err)
    image_file = tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    assert f"{image_file} holds 1x784 images; dataset 'mnist' is 28x28 (dataset.image_size=28)" in line


def test_train_and_test_images_must_have_one_shape(tmp_path):
    mnist_files(tmp_path, np.zeros((20, 28, 28)), np.zeros((10, 14, 14)))
    with pytest.raises(GenctlError, match=re.escape("train images of 1x28x28 and test images of 1x14x14")):
        load_dataset(dataset_cfg(name="mnist", root=str(tmp_path)))  # a config without image_size: a run from before it
    with pytest.raises(GenctlError, match=re.escape("t10k-images-idx3-ubyte holds 14x14 images; dataset 'mnist' is 28x28")):
        load_dataset(dataset_cfg(name="mnist", root=str(tmp_path), image_size=28))


def test_mnist_files_of_another_type_are_refused_in_one_line(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((2, 28, 28), ">f4")
    header = bytes([0, 0, 0x0D, 3]) + b"".join(int(s).to_bytes(4, "big") for s in images.shape)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.zeros(2), gz=False)
    with pytest.raises(GenctlError, match=r"must hold unsigned bytes \(IDX type 0x08\)"):
        load_dataset(dataset_cfg(name="mnist", root=str(tmp_path)))


def test_mnist_layout_from_any_of_the_three_roots(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), 7), gz=False)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10, gz=True)
    for root in (tmp_path, tmp_path / "FashionMNIST", raw):
        data = load_dataset(dataset_cfg(name="fashion_mnist", root=str(root), val_size=5))
        assert (len(data.train), len(data.val), len(data.test)) == (25, 5, 10)
        assert data.shape == (1, 28, 28) and data.train.dtype == torch.uint8


def test_missing_dataset_names_the_paths_tried_and_the_fix(tmp_path):
    with pytest.raises(GenctlError) as err:
        load_dataset(dataset_cfg(name="mnist", root=str(tmp_path / "nowhere")))
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere" / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "dataset.root=" in message


def test_embedded_digits_are_balanced_official_train_and_test_digits():
    data = load_dataset(dataset_cfg(name="digits"))
    assert (len(data.train), len(data.test)) == (2000, 500)
    assert torch.bincount(data.labels["train"]).tolist() == [200] * 10
    assert torch.bincount(data.labels["test"]).tolist() == [50] * 10
    raw = real_data("MNIST") / "MNIST" / "raw"
    for split, prefix, embedded in (("train", "train", data.train), ("test", "t10k", data.test)):
        official = {bytes(row) for row in read_idx(raw / f"{prefix}-images-idx3-ubyte.gz").reshape(-1, 784)}
        assert all(bytes(row) in official for row in embedded.reshape(-1, 784).numpy()), split


def write_cifar(tmp_path, protocol: int = 2) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": list(range(4))}
        (base / name).write_bytes(pickle.dumps(entry, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_python_batches(tmp_path, protocol):
    write_cifar(tmp_path, protocol)
    base = tmp_path / "cifar-10-batches-py"
    data = load_dataset(dataset_cfg(name="cifar10", root=str(tmp_path), val_size=2))
    assert data.shape == (3, 32, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 4)
    first = pickle.loads((base / "data_batch_1").read_bytes())["data"][0]
    assert data.train.flatten(1).tolist().count(first.tolist()) + data.val.flatten(1).tolist().count(first.tolist()) == 1


class Payload:
    def __reduce__(self):
        return (exec, ("open('pwned', 'w').write('ran')",))


def test_a_cifar_batch_that_would_run_code_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path)
    entry = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3], "batch_label": Payload()}
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(entry))
    with pytest.raises(GenctlError, match=r"data_batch_1 is not a CIFAR-10 python batch, refused: it names builtins\.exec"):
        load_dataset(dataset_cfg(name="cifar10", root=str(tmp_path), val_size=2))
    assert not (tmp_path / "pwned").exists()


def test_a_decompression_bomb_image_is_refused_in_one_line(tmp_path, monkeypatch):
    Image.new("L", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # over twice the limit: Pillow refuses it
    cfg = dataset_cfg(name="image_folder", root=str(tmp_path), image_size=8, channels=1, test_size=0, val_size=0)
    with pytest.raises(GenctlError, match=r"cannot decode image .*big\.png: Image size \(4096 pixels\) exceeds"):
        load_dataset(cfg)


def test_image_folder_with_class_subfolders(tmp_path):
    for label, colour in (("cats", 0), ("dogs", 255)):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.new("RGB", (40, 30), (colour, colour, colour)).save(tmp_path / label / f"{i}.png")
    cfg = dataset_cfg(name="image_folder", root=str(tmp_path), image_size=16, channels=3, test_size=2, val_size=2)
    data = load_dataset(cfg)
    assert data.shape == (3, 16, 16)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)
    assert set(torch.cat([data.train, data.val, data.test]).flatten(1).amax(1).tolist()) == {0, 255}


def test_splits_are_deterministic_and_disjoint():
    a = load_dataset(dataset_cfg(name="digits", val_size=300, split_seed=1))
    b = load_dataset(dataset_cfg(name="digits", val_size=300, split_seed=1))
    c = load_dataset(dataset_cfg(name="digits", val_size=300, split_seed=2))
    assert torch.equal(a.val, b.val) and not torch.equal(a.val, c.val)
    train_rows = {bytes(r.numpy()) for r in a.train.flatten(1)}
    assert not any(bytes(r.numpy()) in train_rows for r in a.val.flatten(1))


def test_binarization_protocols():
    dynamic = load_dataset(dataset_cfg(name="digits", binarize="dynamic", val_size=100))
    test_a, test_b = dynamic.fixed("test"), dynamic.fixed("test")
    assert torch.equal(test_a, test_b) and set(test_a.unique().tolist()) == {0.0, 1.0}
    images, fresh = dynamic.train_source()
    assert fresh and images.dtype == torch.uint8
    g = torch.Generator().manual_seed(0)
    first, second = (next(iter(Batches(images[:64], 64, dynamic_binarize=True, generator=g)))[0] for _ in range(2))
    assert not torch.equal(first, second) and set(first.unique().tolist()) == {0.0, 1.0}
    static = load_dataset(dataset_cfg(name="digits", binarize="static", val_size=100))
    images, fresh = static.train_source()
    assert not fresh and set(images.unique().tolist()) == {0.0, 1.0}
    none = load_dataset(dataset_cfg(name="digits", binarize="none", val_size=100))
    assert none.fixed("test").max() == 1.0 and len(none.fixed("test").unique()) > 2


def test_batches_resume_mid_epoch_on_the_next_batch_with_labels_aligned():
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    labels = torch.arange(100) * 7

    def batches(seed: int) -> Batches:
        return Batches(
            images, 16, shuffle=True, dynamic_binarize=True, generator=torch.Generator().manual_seed(seed), labels=labels
        )

    full = batches(3)
    expected = [b for _ in range(2) for b in full]
    part = batches(3)
    it = iter(part)
    seen = [next(it) for _ in range(3)]
    # the progress bar starts at `position`: mid-epoch where a run stopped, 0 after a whole epoch
    assert part.position == 48 and full.position == 0
    resumed = batches(99)
    resumed.load_state_dict(part.state_dict())
    seen += list(resumed) + list(resumed)
    assert len(seen) == len(expected)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(seen, expected))
    plain = next(iter(Batches(images, 100, shuffle=True, generator=torch.Generator().manual_seed(0), labels=labels)))
    assert torch.equal(plain[1], (plain[0].flatten() * 255).round().long() * 7)  # each label stays with its image
    assert next(iter(Batches(images, 4)))[1] is None


def test_download_without_a_working_torchvision_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    cfg = dataset_cfg(name="mnist", root=str(tmp_path), download=True)
    with pytest.raises(GenctlError, match=r"dataset.download=true needs a working torchvision .*genctl\[download\]"):
        load_dataset(cfg)
    with pytest.raises(GenctlError, match="add dataset.download=true"):
        load_dataset(dataset_cfg(name="mnist", root=str(tmp_path)))


def protocol(name: str, **overrides: object):
    """The dataset config ``name`` as `genctl train dataset=NAME` composes it, on the real files."""
    from hydra import compose, initialize_config_dir

    from genctl.config import config_dir

    root = real_data("FashionMNIST" if name.startswith("fashion") else "MNIST")
    args = [f"dataset={name}", f"dataset.root={root}", *(f"dataset.{k}={v}" for k, v in overrides.items())]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return load_dataset(compose("train", args).dataset)


def test_binarized_mnist_is_the_autoregressive_papers_protocol():
    data = protocol("binarized_mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (50_000, 10_000, 10_000)
    train, dynamic = data.train_source()
    assert not dynamic and set(train.unique().tolist()) == {0.0, 1.0}  # one fixed binarization
    assert torch.equal(data.fixed("test"), data.fixed("test"))
    assert "50,000 train / 10,000 val / 10,000 test, one fixed binarization drawn by genctl" in data.protocol


def test_dynamic_mnist_is_the_vae_papers_protocol():
    data = protocol("dynamic_mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (59_000, 1_000, 10_000)
    train, dynamic = data.train_source()
    assert dynamic and train.dtype == torch.uint8  # binarized afresh per batch
    assert set(data.fixed("test").unique().tolist()) == {0.0, 1.0}
    assert "dynamic binarization" in data.protocol


def test_fashion_mnist_is_8bit_by_default():
    data = protocol("fashion_mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (59_000, 1_000, 10_000)
    assert not data.binary and len(data.fixed("test").unique()) > 200
    assert "8-bit values (256 levels)" in data.protocol
