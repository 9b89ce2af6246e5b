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
