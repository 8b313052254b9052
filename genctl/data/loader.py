"""Mini-batches straight from tensors already in memory (and on the training device).

A torch DataLoader over a per-item Dataset decodes and collates one image at a time; for
datasets that fit in memory (all of genctl's) indexing one tensor per batch is much faster.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class Batches:
    """Iterate shuffled batches ``(x, y)`` of ``images``; uint8 images become floats in [0, 1],
    ``y`` are the matching ``labels`` (None when no labels were given).

    With ``dynamic_binarize`` every batch is a fresh Bernoulli draw. Shuffling and the draws use
    ``generator`` alone, and the epoch's order and position are part of :meth:`state_dict`, so a
    run stopped mid-epoch resumes on exactly the batch it would have drawn next.

    ``shard=(rank, world)``: data-parallel training. Every rank draws the same global batch and
    keeps images rank, rank + world, ... of it (``genctl.distributed``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        dynamic_binarize: bool = False,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if (shuffle or dynamic_binarize) and generator is None:
            raise ValueError("shuffling or dynamic binarization needs a generator")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.dynamic_binarize = dynamic_binarize
        self.generator = generator
        self.rank, self.world = shard
        self.order: torch.Tensor | None = None
        self.position = 0

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        n = len(self.images)
        if self.order is None:
            if self.shuffle:
                self.order = torch.randperm(n, generator=self.generator, device=self.images.device)
            else:
                self.order = torch.arange(n, device=self.images.device)
        while self.position < n:
            index = self.order[self.position : self.position + self.batch_size]
            self.position += len(index)
            x = self.images[index]
            if x.dtype == torch.uint8:
                x = x.float().div_(255.0)
            if self.dynamic_binarize:
                x = torch.bernoulli(x, generator=self.generator)
            y = None if self.labels is None else self.labels[index]
            if self.world > 1:  # every rank drew the same global batch: keep every world-th image
                if len(index) < self.world:
                    continue  # an epoch's last few images cannot give every rank one
                x, y = x[self.rank :: self.world], None if y is None else y[self.rank :: self.world]
            yield x, y
        self.order, self.position = None, 0

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state() if self.generator is not None else None,
            "order": None if self.order is None else self.order.cpu(),
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        if self.generator is not None:
            self.generator.set_state(state["generator"])
        self.order = None if state["order"] is None else state["order"].to(self.images.device)
        self.position = state["position"]
