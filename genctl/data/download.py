"""``dataset.download=true``: fetch a missing dataset with torchvision, where it imports.

genctl reads the files itself and never needs torchvision otherwise; it is an optional extra
(``pip install "genctl[download]"``) only for this. torchvision writes the same layout the
readers expect, so after a download the normal path takes over.
"""

from __future__ import annotations

from pathlib import Path

from genctl.errors import GenctlError

TORCHVISION_NAMES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def download(name: str, root: Path) -> None:
    if name not in TORCHVISION_NAMES:
        raise GenctlError(f"dataset '{name}' has no download; place its files under dataset.root")
    try:
        import torchvision.datasets as tv
    except Exception as e:  # noqa: BLE001 - a broken torchvision (e.g. CUDA build next to CPU torch) raises odd errors
        raise GenctlError(
            f"dataset.download=true needs a working torchvision (pip install 'genctl[download]' with a torchvision "
            f"that matches your torch; import failed: {str(e).splitlines()[0][:120]}); or put the files under {root}"
        ) from e
    dataset = getattr(tv, TORCHVISION_NAMES[name])
    try:
        for train in (True, False):
            dataset(str(root), train=train, download=True)
    except Exception as e:  # noqa: BLE001 - network and mirror errors come in many types
        raise GenctlError(f"downloading '{name}' to {root} failed: {str(e).splitlines()[0][:200]}") from e
