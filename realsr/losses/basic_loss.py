"""Pixel losses: L1, MSE and Charbonnier (BasicSR names, arguments and reductions)."""
import torch
from torch import nn
from torch.nn import functional as F

from realsr.registry import LOSS_REGISTRY

_REDUCTIONS = ('none', 'mean', 'sum')


def reduce_loss(loss, weight=None, reduction='mean'):
    """Apply an optional element weight, then reduce. A weighted mean divides by the weight's
    sum (over every channel the loss has), as BasicSR does."""
    if weight is not None:
        loss = loss * weight
    if reduction == 'none':
        return loss
    if reduction == 'sum':
        return loss.sum()
    if weight is None:
        return loss.mean()
    denom = weight.sum() * (loss.size(1) if weight.size(1) == 1 and loss.dim() > 1 else 1)
    return loss.sum() / denom


class _PixelLoss(nn.Module):
    """Base of the pixel losses: subclasses define ``elementwise(pred, target)``."""

    def __init__(self, loss_weight=1.0, reduction='mean'):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'{type(self).__name__}: reduction must be one of {_REDUCTIONS}, got {reduction!r}')
        self.loss_weight = loss_weight
        self.reduction = reduction

    def forward(self, pred, target, weight=None, **kwargs):
        return self.loss_weight * reduce_loss(self.elementwise(pred, target), weight, self.reduction)


@LOSS_REGISTRY.register()
class L1Loss(_PixelLoss):
    """Mean absolute error."""

    def elementwise(self, pred, target):
        return F.l1_loss(pred, target, reduction='none')


@LOSS_REGISTRY.register()
class MSELoss(_PixelLoss):
    """Mean squared error."""

    def elementwise(self, pred, target):
        return F.mse_loss(pred, target, reduction='none')


@LOSS_REGISTRY.register()
class CharbonnierLoss(_PixelLoss):
    """Charbonnier (smooth L1): ``sqrt((pred - target)^2 + eps)``."""

    def __init__(self, loss_weight=1.0, reduction='mean', eps=1e-12):
        super().__init__(loss_weight, reduction)
        self.eps = eps

    def elementwise(self, pred, target):
        return torch.sqrt((pred - target)**2 + self.eps)
