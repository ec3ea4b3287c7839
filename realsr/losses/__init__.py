"""Losses with BasicSR's names and arguments; registered in ``LOSS_REGISTRY``."""
import copy

from realsr.registry import LOSS_REGISTRY


def build_loss(loss_opt):
    """Build a loss from ``{type: L1Loss, loss_weight: 1.0, ...}``."""
    loss_opt = copy.deepcopy(loss_opt)
    return LOSS_REGISTRY.get(loss_opt.pop('type'))(**loss_opt)
