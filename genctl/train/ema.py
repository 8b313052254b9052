"""An exponential moving average of the weights (Polyak averaging), which NVAE and PixelCNN++
report their likelihoods with: after every optimizer step the averaged weights move a fraction
1 - decay towards the trained ones. torch.optim.swa_utils does the averaging.

When ``trainer.ema`` > 0, genctl validates (and so chooses best.pt), tests and samples with the
averaged weights; checkpoints hold both, and a resumed run continues the average exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from genctl.models import GenerativeModel


class EMA:
    """The averaged copy of ``source``. Only parameters are averaged; buffers (BatchNorm
    statistics, masks, degrees) are copied from the trained model, since averaging integer or
    constant buffers in floating point can change them."""

    def __init__(self, source: GenerativeModel, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema must be between 0 and 1 (a decay such as 0.999; 0 turns it off), got {decay}")
        self.source = source
        self.averaged = AveragedModel(source, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)

    @property
    def model(self) -> GenerativeModel:
        return self.averaged.module

    @torch.no_grad()
    def update(self) -> None:
        self.averaged.update_parameters(self.source)
        for mine, theirs in zip(self.model.buffers(), self.source.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.model.state_dict(), "updates": int(self.averaged.n_averaged)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["weights"])
        self.averaged.n_averaged.fill_(state["updates"])
