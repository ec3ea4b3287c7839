"""A CUDA out-of-memory error explained with what the option file controls: the batch, the crop,
the arch, and what to change (the command line prints it as one line, exit status 5)."""
import contextlib
import re

import torch

from realsr import option_defs as defs

OUT_OF_MEMORY_EXIT_STATUS = 5


class OutOfMemoryStop(RuntimeError):
    """torch.OutOfMemoryError in training or validation, with the run's settings and suggestions."""


def out_of_memory_message(opt, phase, err=None):
    """One line: where memory ran out, the settings that size it, and what to change."""
    train = (opt.get('datasets') or {}).get('train') or {}
    net = (opt.get('network_g') or {}).get('type', '?')
    batch = train.get('batch_size_per_gpu', '?')
    accum = defs.value(train, defs.TRAIN_DATASET_EXTRA, 'accum_iter')
    crop = train.get('gt_size', '?')
    tried = re.search(r'Tried to allocate [\d.]+ \w+', str(err or ''))
    tried = f' ({tried.group(0).lower()})' if tried else ''
    where = f"device {opt.get('device', '?')}"
    settings = (f'datasets.train.batch_size_per_gpu {batch}, datasets.train.accum_iter {accum}, '
                f'datasets.train.gt_size {crop}, network_g {net}')
    if phase == 'testing':  # realsr-test: no training batch or crop to report
        settings = f'network_g {net}'
    if phase in ('validation', 'testing'):
        tile = (opt.get('val') or {}).get('tile') or opt.get('tile')
        hint = ('set a smaller val.tile.tile_size' if tile else
                'set val.tile: {tile_size: 256, tile_pad: 16} to validate large images in tiles')
    else:
        hint = (f'set a smaller datasets.train.batch_size_per_gpu and a larger datasets.train.accum_iter '
                f'(e.g. {_half(batch)} and {accum * 2}: the same effective batch in less memory), or a smaller '
                'datasets.train.gt_size')
    return f'CUDA out of memory in {phase} on {where}{tried} with {settings}: {hint}.'


def _half(batch):
    return max(batch // 2, 1) if isinstance(batch, int) else 'half'


@contextlib.contextmanager
def explain_out_of_memory(opt, phase):
    """Re-raises ``torch.OutOfMemoryError`` inside the block as :class:`OutOfMemoryStop`."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        raise OutOfMemoryStop(out_of_memory_message(opt, phase, err)) from err
