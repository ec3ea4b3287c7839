"""Data loaders and prefetchers with BasicSR's option keys.

Train: ``batch_size_per_gpu`` and ``num_worker_per_gpu`` per process (multiplied by ``num_gpu``
when not distributed, as BasicSR does for DataParallel), ``drop_last``, shuffling by the
sampler. Validation/test: batch 1, no shuffling, no workers.
``prefetch_mode``: ~ (plain), ``cpu`` (a background thread keeps ``num_prefetch_queue``
batches ready) or ``cuda`` (copies the next batch to the GPU on a side stream).
"""
import logging
import queue as Queue
import signal
import threading

import torch
from torch.utils.data import DataLoader

from realsr import option_defs as defs
from realsr.data.sampler import SeededDataset

logger = logging.getLogger('realsr')
_LOGGED_IGNORED = set()


def pin_memory_default(dataset_opt, num_gpu):
    """``pin_memory`` as set, else on when training on a GPU: a pageable source makes the
    ``non_blocking`` host-to-device copies synchronous."""
    value = dataset_opt.get('pin_memory')
    if value is None:
        return num_gpu != 0 and torch.cuda.is_available()
    return bool(value)


def ignore_stop_signals(worker_id=None):
    """A loader worker leaves SIGTERM/SIGINT to the main process, which stops after saving
    (realsr.runtime.preemption). Slurm and Ctrl-C signal every process of the job, and torch's
    workers would die of it mid-batch, failing the main process before it can save."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def gpus_per_process(num_gpu, dist):
    """How many GPUs one process feeds: ``num_gpu`` under BasicSR's DataParallel (no launcher), else 1.
    A training batch of one process is ``batch_size_per_gpu`` times this."""
    return 1 if dist or not isinstance(num_gpu, int) else max(num_gpu, 1)


def build_dataloader(dataset, dataset_opt, num_gpu=1, dist=False, sampler=None, seed=0):
    phase = dataset_opt['phase']
    if dataset_opt.get('use_shuffle') is not None and 'use_shuffle' not in _LOGGED_IGNORED:
        _LOGGED_IGNORED.add('use_shuffle')  # BasicSR's files carry it; BasicSR ignores it as well
        logger.info('use_shuffle is ignored: the training sampler shuffles (validation and test never do).')
    if phase == 'train':
        if sampler is None:
            raise ValueError('the train dataloader needs an EnlargedSampler')
        multiplier = gpus_per_process(num_gpu, dist)
        num_workers = defs.value(dataset_opt, defs.LOADER, 'num_worker_per_gpu') * multiplier
        g = torch.Generator()
        g.manual_seed(seed)  # keeps the loader from drawing its worker seed from the global RNG
        kwargs = dict(dataset=SeededDataset(dataset), batch_size=dataset_opt['batch_size_per_gpu'] * multiplier,
                      shuffle=False, num_workers=num_workers, sampler=sampler, drop_last=True, generator=g,
                      pin_memory=pin_memory_default(dataset_opt, num_gpu),
                      persistent_workers=defs.value(dataset_opt, defs.LOADER, 'persistent_workers') and num_workers > 0)
        if num_workers > 0:
            kwargs['prefetch_factor'] = defs.value(dataset_opt, defs.LOADER, 'prefetch_factor')
            kwargs['worker_init_fn'] = ignore_stop_signals
    elif phase in ('val', 'test'):
        kwargs = dict(dataset=dataset, batch_size=1, shuffle=False, num_workers=0)
    else:
        raise ValueError(f"dataset phase must be train, val or test, got {phase!r}")
    return DataLoader(**kwargs)


class PrefetchGenerator(threading.Thread):
    """Iterates a loader in a background thread, keeping up to ``num_prefetch_queue`` batches."""

    def __init__(self, generator, num_prefetch_queue):
        super().__init__(daemon=True)
        self.queue = Queue.Queue(num_prefetch_queue)
        self.generator = generator
        self.start()

    def run(self):
        try:
            for item in self.generator:
                self.queue.put(item)
        except Exception as err:  # hand the error to the consumer instead of dying silently
            self.queue.put(err)
        self.queue.put(None)

    def __next__(self):
        item = self.queue.get()
        if item is None:
            raise StopIteration
        if isinstance(item, Exception):
            raise item
        return item

    def __iter__(self):
        return self


class CPUPrefetcher:
    """``next()`` returns a batch, or None at the end of the epoch; ``reset()`` starts again."""

    def __init__(self, loader, num_prefetch_queue=None):
        self.loader = loader
        self.num_prefetch_queue = num_prefetch_queue
        self.iter = None

    def reset(self):
        it = iter(self.loader)
        self.iter = PrefetchGenerator(it, self.num_prefetch_queue) if self.num_prefetch_queue else it

    def next(self):
        if self.iter is None:
            self.reset()
        try:
            return next(self.iter)
        except StopIteration:
            return None

    def close(self):
        """Ends the loader's worker processes now. They ignore SIGTERM (ignore_stop_signals), so
        the terminate() of multiprocessing's exit handler would not, and they would linger a few
        seconds after a stopped run, until they notice their parent is gone."""
        it, self.iter = self.iter, None
        if isinstance(it, PrefetchGenerator):
            it = it.generator
        shutdown = getattr(it, '_shutdown_workers', None)  # torch's multi-process iterator
        if shutdown is not None:
            shutdown()


class CUDAPrefetcher(CPUPrefetcher):
    """Copies each batch to ``device`` on a side stream one step ahead of its use."""

    def __init__(self, loader, device):
        super().__init__(loader)
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self.batch = None

    def reset(self):
        super().reset()
        self._preload()

    def _preload(self):
        try:
            self.batch = next(self.iter)
        except StopIteration:
            self.batch = None
            return
        with torch.cuda.stream(self.stream):
            self.batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                          for k, v in self.batch.items()}

    def next(self):
        if self.iter is None:
            self.reset()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        batch = self.batch
        if batch is not None:
            for v in batch.values():
                if torch.is_tensor(v):
                    v.record_stream(torch.cuda.current_stream(self.device))
            self._preload()
        return batch


def make_prefetcher(loader, dataset_opt, device):
    mode = dataset_opt.get('prefetch_mode')
    if mode is None:
        return CPUPrefetcher(loader)
    if mode == 'cpu':
        return CPUPrefetcher(loader, defs.value(dataset_opt, defs.LOADER, 'num_prefetch_queue'))
    if mode == 'cuda':
        if device.type != 'cuda':
            raise ValueError("prefetch_mode 'cuda' needs a GPU; use prefetch_mode: cpu or ~ on this machine")
        if dataset_opt.get('pin_memory') is False:
            raise ValueError("prefetch_mode 'cuda' needs pinned memory: remove pin_memory: false from the train dataset")
        return CUDAPrefetcher(loader, device)
    raise ValueError(f"prefetch_mode must be ~, cpu or cuda, got {mode!r}")
