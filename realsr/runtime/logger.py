"""Logging: the root logger (console + file), the training message line, tensorboard.

Console output goes through ``tqdm.write`` so log lines and the progress bar do not garble
each other. Ranks other than 0 only log errors.
"""
import datetime
import logging
import logging.handlers
import os
import resource
import sys
import time

import torch
from tqdm import tqdm

from realsr import compat
from realsr.runtime.dist import get_dist_info

LOGGER_NAME = 'realsr'
_FORMAT = '%(asctime)s %(levelname)s: %(message)s'


class _TqdmHandler(logging.StreamHandler):

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never crash training
            self.handleError(record)


def get_root_logger(log_file=None, log_level=logging.INFO):
    """The ``realsr`` logger; adds a file handler for ``log_file`` on rank 0."""
    logger = logging.getLogger(LOGGER_NAME)
    rank, _ = get_dist_info()
    if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(log_level if rank == 0 else logging.ERROR)
    if log_file is not None and rank == 0:
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == os.path.abspath(log_file)
                   for h in logger.handlers):
            fh = logging.FileHandler(log_file, 'w')
            fh.setFormatter(logging.Formatter(_FORMAT))
            logger.addHandler(fh)
            _replay_held_records(logger, fh)
    elif log_file is not None:  # other ranks write no log file: what they held is dropped
        _replay_held_records(logger, None)
    return logger


class _HeldRecords(logging.handlers.MemoryHandler):
    """Records logged before the log file may be created (see :func:`hold_log_records`)."""

    def __init__(self):
        super().__init__(capacity=1 << 30, flushLevel=logging.CRITICAL + 1)


def hold_log_records():
    """Keep the ``realsr`` logger's records (they still reach the console) until
    :func:`get_root_logger` opens a log file, which then starts with them. A resumed run validates
    its training state before it writes anything into the experiment folder, its log file included;
    records held by an earlier run of this process that never opened its file are dropped."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if isinstance(h, _HeldRecords)]:
        logger.removeHandler(handler)
    logger.addHandler(_HeldRecords())


def _replay_held_records(logger, file_handler):
    for held in [h for h in logger.handlers if isinstance(h, _HeldRecords)]:
        logger.removeHandler(held)
        for record in held.buffer if file_handler is not None else []:
            if record.levelno >= file_handler.level:
                file_handler.handle(record)
        held.buffer.clear()


def close_file_handlers():
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler):
            h.close()
            logger.removeHandler(h)


def peak_memory_mb(device):
    """Peak memory so far: CUDA allocator peak on a GPU, peak resident set size on CPU."""
    if device is not None and device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def init_tb_logger(log_dir):
    from tensorboardX import SummaryWriter
    return SummaryWriter(log_dir=log_dir)


class MessageLogger:
    """Formats the periodic training line and writes the scalars to tensorboard and wandb (the same
    tags and values to both; ``wandb_logger``: a :class:`realsr.runtime.wandb_logger.WandbLogger`).

    ``[name..][epoch:  1, iter:     200, lr:(2.000e-04,)] [eta: 0:01:10, time (data): 0.105 (0.002),
    9.52 it/s, peak mem: 812 MB] l_pix: 1.2345e-02``
    """

    def __init__(self, opt, start_iter=0, tb_logger=None, device=None, wandb_logger=None):
        self.exp_name = str(opt['name'])
        self.debug_run = compat.is_debug_run(opt)  # BasicSR: no tensorboard scalars in debug runs
        self.interval = opt['logger']['print_freq']
        self.max_iters = opt['train']['total_iter']
        self.use_tb_logger = opt['logger']['use_tb_logger']  # its default is filled from realsr/option_defs.py
        self.tb_logger = tb_logger
        self.wandb_logger = wandb_logger
        self.device = device
        self.start_iter = start_iter
        self.start_time = time.time()
        self.logger = logging.getLogger(LOGGER_NAME)

    def reset_start_time(self, current_iter=None):
        """Measure speed and ETA from now, ``current_iter`` being the last iteration done."""
        self.start_time = time.time()
        if current_iter is not None:
            self.start_iter = current_iter

    def __call__(self, log_vars):
        log_vars = dict(log_vars)
        epoch = log_vars.pop('epoch')
        current_iter = log_vars.pop('iter')
        lrs = log_vars.pop('lrs')
        message = f'[{self.exp_name[:5]}..][epoch:{epoch:3d}, iter:{current_iter:8,d}, lr:('
        message += ''.join(f'{v:.3e},' for v in lrs) + ')] '
        if 'time' in log_vars:
            iter_time = log_vars.pop('time')
            data_time = log_vars.pop('data_time')
            done = current_iter - self.start_iter
            if done > 0:  # none yet right after the (start-up) first iteration: no speed to tell
                time_sec_avg = (time.time() - self.start_time) / done
                eta = datetime.timedelta(seconds=int(time_sec_avg * (self.max_iters - current_iter)))
                speed = f'eta: {eta}, '
                rate = f', {1.0 / max(time_sec_avg, 1e-9):.2f} it/s'
            else:
                speed, rate = '', ''
            message += (f'[{speed}time (data): {iter_time:.3f} ({data_time:.3f}){rate}, '
                        f'peak mem: {peak_memory_mb(self.device):.0f} MB] ')
        scalars = {}
        for k, v in log_vars.items():
            message += f'{k}: {v:.4e} '
            if not self.debug_run:
                scalars[f'losses/{k}' if k.startswith('l_') else k] = v
        scalars['lr'] = lrs[0]
        sinks = ([self.tb_logger] if self.use_tb_logger else []) + [self.wandb_logger]
        for sink in (s for s in sinks if s is not None):
            for tag, value in scalars.items():
                sink.add_scalar(tag, value, current_iter)
        self.logger.info(message.rstrip())
