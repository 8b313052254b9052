"""The training step (genctl/train/step.py) against the same step written out by hand."""

from __future__ import annotations

import copy

import torch
from torch import nn

from genctl.runs.progress import Progress
from genctl.train.precision import Precision
from genctl.train.step import LossStep, TrainStep


def squared(model: nn.Module, x: torch.Tensor, step: int | None, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A loss with a logged extra term, as genctl's losses return."""
    out = model(x)
    return {"loss": out.pow(2).sum(1).mean(), "mean": out.mean()}


def train_step(model: nn.Module, loss_fn=squared, grad_clip: float = 0.0, skip_nonfinite: bool = False) -> TrainStep:
    return TrainStep(
        loss_step=LossStep(model, loss_fn),
        optimizer=torch.optim.Adam(model.parameters(), lr=0.1),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        parameters=list(model.parameters()),
        grad_clip=grad_clip,
        precision=Precision("32"),
        device_type="cpu",
        skip_nonfinite=skip_nonfinite,
    )


def test_a_step_is_forward_backward_clip_and_update_by_hand():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    reference = copy.deepcopy(model)
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.1)
    step, progress = train_step(model, grad_clip=0.5), Progress()
    for _ in range(3):  # Adam's moments carry over from step to step
        x = torch.randn(8, 5)
        out = step(x, None, progress)
        loss = reference(x).pow(2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        assert nn.utils.clip_grad_norm_(reference.parameters(), 0.5) > 0.5  # the clip did something
        optimizer.step()
        assert set(out) == {"loss", "mean"} and not out["loss"].requires_grad
        assert torch.equal(out["loss"], loss.detach())
        for ours, theirs in zip(model.parameters(), reference.parameters()):
            assert torch.equal(ours, theirs)
    assert (progress.step, progress.skipped) == (3, 0)


def test_the_loss_sees_the_number_of_steps_taken_before():
    seen: list[int | None] = []

    def recording(model, x, step, y=None):
        seen.append(step)
        return squared(model, x, step, y)

    step, progress = train_step(nn.Linear(2, 2), recording), Progress(step=7)
    step(torch.ones(1, 2), None, progress)
    step(torch.ones(1, 2), None, progress)
    assert seen == [7, 8] and progress.step == 9


def nan_loss(model, x, step, y=None):
    out = squared(model, x, step, y)
    return {**out, "loss": out["loss"] * float("nan")}


def test_a_nonfinite_loss_is_skipped_when_asked():
    model = nn.Linear(5, 3)
    before = copy.deepcopy(model.state_dict())
    step, progress = train_step(model, nan_loss, grad_clip=1.0, skip_nonfinite=True), Progress()
    assert step(torch.randn(4, 5), None, progress) is None
    assert (progress.step, progress.skipped) == (1, 1)  # counted as taken, not applied
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert not step.optimizer.state  # the optimizer never stepped


def test_a_nonfinite_loss_is_applied_and_returned_when_not_skipped():
    model = nn.Linear(5, 3)
    step, progress = train_step(model, nan_loss), Progress()
    out = step(torch.randn(4, 5), None, progress)
    assert out is not None and out["loss"].isnan()  # the loop names the step and stops
    assert (progress.step, progress.skipped) == (1, 0) and model.weight.isnan().all()
