"""`distill:` — knowledge distillation (Hinton et al. 2015).

The student learns from the teacher's softened class probabilities as well as from the labels:
``loss = α·T²·KL(p_teacher^T ‖ p_student^T) + (1 − α)·task_loss``, where ``p^T = softmax(logits / T)``.
The T² keeps the soft term's gradients on the same scale as the hard term's when T changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, task_loss: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean")
    return alpha * temperature ** 2 * soft + (1 - alpha) * task_loss


def frozen(teacher: nn.Module) -> nn.Module:
    """The teacher in eval mode with no gradients; it is a copy, so the notebook's model is untouched."""
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


class OnItsOwnInputs(nn.Module):
    """A teacher Run trained with other normalisation statistics than the student's sees the student's
    batches as it was trained to: the student's normalisation undone, the teacher's own applied. Without
    this, a teacher trained on raw pixels would be fed normalised ones and teach noise."""

    def __init__(self, teacher: nn.Module, student: dict | None, own: dict | None):
        super().__init__()
        self.teacher, self.student, self.own = teacher, student, own
        self._statistics: dict = {}  # (device, sample shape) -> both normalisations' tensors, made once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.shape[1:])
        if key not in self._statistics:
            self._statistics[key] = (_tensors(self.student, x), _tensors(self.own, x))
        student, own = self._statistics[key]
        if student is not None:
            x = x * student[1] + student[0]
        if own is not None:
            x = (x - own[0]) / own[1]
        return self.teacher(x)


def _tensors(normalization: dict | None, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A run's normalisation as (mean, std) on x's device, shaped to broadcast over x; None without one."""
    from nbopt.run import normalization_tensors
    if normalization is None:
        return None
    mean, std = normalization_tensors(normalization, x)
    return mean.to(x.device), std.to(x.device)

