"""BasicSR's learning-rate schedulers (same names, arguments and values).

``MultiStepLR`` in an option file means :class:`MultiStepRestartLR` (BasicSR's alias).
"""
import math
from collections import Counter

from torch.optim.lr_scheduler import LRScheduler


class MultiStepRestartLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each milestone; at a restart, reset it to
    ``initial_lr * restart_weight``."""

    def __init__(self, optimizer, milestones, gamma=0.1, restarts=(0, ), restart_weights=(1, ), last_epoch=-1):
        self.milestones = Counter(int(m) for m in milestones)
        self.gamma = gamma
        self.restarts = [int(r) for r in restarts]
        self.restart_weights = list(restart_weights)
        if len(self.restarts) != len(self.restart_weights):
            raise ValueError(f'scheduler: restarts {self.restarts} and restart_weights {self.restart_weights} '
                             'must have the same length')
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch in self.restarts:
            weight = self.restart_weights[self.restarts.index(self.last_epoch)]
            return [group['initial_lr'] * weight for group in self.optimizer.param_groups]
        if self.last_epoch not in self.milestones:
            return [group['lr'] for group in self.optimizer.param_groups]
        return [group['lr'] * self.gamma**self.milestones[self.last_epoch] for group in self.optimizer.param_groups]


class CosineAnnealingRestartLR(LRScheduler):
    """Cosine annealing over ``periods`` (one after another), each restart scaled by its weight:
    ``lr = eta_min + w * 0.5 * (base - eta_min) * (1 + cos(pi * (t - last_restart) / period))``."""

    def __init__(self, optimizer, periods, restart_weights=(1, ), eta_min=0, last_epoch=-1):
        self.periods = [int(p) for p in periods]
        self.restart_weights = list(restart_weights)
        self.eta_min = eta_min
        if len(self.periods) != len(self.restart_weights):
            raise ValueError(f'scheduler: periods {self.periods} and restart_weights {self.restart_weights} '
                             'must have the same length')
        self.cumulative_period = [sum(self.periods[:i + 1]) for i in range(len(self.periods))]
        super().__init__(optimizer, last_epoch)

    def _position(self, t):
        for i, end in enumerate(self.cumulative_period):
            if t <= end:
                return i
        raise ValueError(f'scheduler: iteration {t} is past the last period end {self.cumulative_period[-1]}; '
                         'make train.scheduler.periods sum to at least train.total_iter')

    def get_lr(self):
        idx = self._position(self.last_epoch)
        weight = self.restart_weights[idx]
        last_restart = 0 if idx == 0 else self.cumulative_period[idx - 1]
        period = self.periods[idx]
        return [
            self.eta_min + weight * 0.5 * (base_lr - self.eta_min) *
            (1 + math.cos(math.pi * ((self.last_epoch - last_restart) / period))) for base_lr in self.base_lrs
        ]


_SCHEDULERS = {
    'MultiStepLR': MultiStepRestartLR,
    'MultiStepRestartLR': MultiStepRestartLR,
    'CosineAnnealingRestartLR': CosineAnnealingRestartLR,
}


def get_scheduler_class(name):
    if name not in _SCHEDULERS:
        raise KeyError(f"unknown scheduler '{name}'; choose one of {', '.join(_SCHEDULERS)}")
    return _SCHEDULERS[name]


def build_scheduler(optimizer, sched_opt):
    sched_opt = dict(sched_opt)
    return get_scheduler_class(sched_opt.pop('type'))(optimizer, **sched_opt)
