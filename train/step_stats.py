"""Training-step statistics kept on the device: the loss, the accuracy and the squared gradient
norm are added up as tensors every step and read back to the host only when asked (once per
logging interval and once per epoch), so that a step never waits for the GPU."""
from __future__ import annotations

import torch


def squared_grad_norm(parameters) -> torch.Tensor:
    """Sum over `parameters` of their gradients' squared L2 norms, a float64 tensor on their
    device (0 when none has a gradient); no host sync."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack([g.detach().float().pow(2).sum() for g in grads]).double().sum()


def mixed_accuracy(logits: torch.Tensor, y: torch.Tensor, y2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose prediction is the label of the larger share (the partner's where its
    weight w > 0.5), a float64 tensor on the logits' device. Soft labels (N, C) (Co-Mixup): the
    class of the largest mixed share (1 - w) y + w y2."""
    w = w.to(y.device)
    if y.is_floating_point():
        target = ((1 - w)[:, None] * y + w[:, None] * y2).argmax(1)
    else:
        target = torch.where(w > 0.5, y2, y)
    return (logits.detach().argmax(1) == target).double().mean()


class StepStats:
    """Running sums of (loss, accuracy, squared gradient norm) over steps, on `device`."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.steps = 0

    def add(self, loss: torch.Tensor, accuracy: torch.Tensor, grad_sq: torch.Tensor) -> None:
        """Adds one step (0-d tensors); asynchronous on a GPU."""
        self.sums += torch.stack([loss.detach().double(), accuracy.to(self.sums.device),
                                  grad_sq.to(self.sums.device)])
        self.steps += 1

    def read(self) -> dict:
        """Means over the steps added so far, as Python floats (one device-to-host copy)."""
        loss, accuracy, grad_sq = (self.sums / max(self.steps, 1)).tolist()
        return {"loss": loss, "accuracy": accuracy, "sq_grad_norm": grad_sq}
