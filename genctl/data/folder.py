"""Any folder of images, decoded once into memory (torchvision ImageFolder's layout or flat).

Class labels come from first-level sub-folders when there are any (``root/<class>/*.png``),
otherwise every image gets label 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from genctl.errors import GenctlError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def read_image_folder(root: Path, image_size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image under ``root`` to uint8 [N, channels, image_size, image_size]."""
    if not root.is_dir():
        raise GenctlError(
            f"dataset 'image_folder' not found: {root} is not a folder; set dataset.root=DIR "
            f"to a folder of images (optionally one sub-folder per class)"
        )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise GenctlError(f"no images ({', '.join(sorted(EXTENSIONS))}) found under {root}")
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    index = {c: i for i, c in enumerate(classes)}
    mode = {1: "L", 3: "RGB"}[channels]
    images = np.empty((len(files), image_size, image_size, channels), np.uint8)
    labels = np.zeros(len(files), np.int64)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                im = im.convert(mode).resize((image_size, image_size), Image.BILINEAR)
                images[i] = np.asarray(im).reshape(image_size, image_size, channels)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise GenctlError(f"cannot decode image {path}: {str(e).splitlines()[0]}") from e
        parts = path.relative_to(root).parts
        labels[i] = index[parts[0]] if len(parts) > 1 else 0
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
