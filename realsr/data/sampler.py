"""BasicSR's ``EnlargedSampler``, made resumable mid-epoch and reproducible per sample.

The order is BasicSR's: each epoch a ``randperm`` of ``ceil(len * ratio / world) * world``
positions seeded by the epoch number, taken modulo the dataset length, every ``world``-th one
for this rank. Two additions make an interrupted run resume exactly:

* ``set_epoch(epoch, start)`` skips the first ``start`` samples of the epoch;
* every index comes with its own seed, derived from (seed, epoch, rank, position), which
  :class:`SeededDataset` uses for that sample's random crop and flips. A sample's
  augmentation therefore depends on where it is in the run, not on which worker process
  loaded it or how many samples that worker loaded before.

The per-sample seeding never touches torch's default generators (CPU or CUDA): torch draws
made while loading a sample go through :func:`sample_generator`, a CPU ``torch.Generator``
seeded for that sample. ``torch.manual_seed`` would also reseed every CUDA generator, which
would restart GPU dropout masks from the last sample's seed each batch (``num_worker_per_gpu:
0``) or race with the training loop (``prefetch_mode: cpu`` loads in a background thread).
"""
import math
import random
import threading

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info


def sample_seed(seed, epoch, rank, position):
    return int(np.random.SeedSequence([seed % 2**32, epoch, rank, position]).generate_state(1)[0])


class EnlargedSampler(Sampler):

    def __init__(self, dataset, num_replicas, rank, ratio=1, seed=0):
        self.dataset_len = len(dataset)
        if self.dataset_len == 0:
            raise ValueError('the training dataset is empty')
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.start = 0
        self.num_samples = math.ceil(self.dataset_len * ratio / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch, start=0):
        self.epoch = epoch
        self.start = start

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.epoch)
        indices = torch.randperm(self.total_size, generator=g).tolist()
        indices = [v % self.dataset_len for v in indices][self.rank:self.total_size:self.num_replicas]
        for pos in range(self.start, len(indices)):
            yield indices[pos], sample_seed(self.seed, self.epoch, self.rank, pos)

    def __len__(self):
        return self.num_samples - self.start


_current = threading.local()


def sample_generator():
    """The CPU ``torch.Generator`` seeded for the sample being loaded in this thread (by
    :class:`SeededDataset`), or None outside a sample fetch. Datasets and transforms that draw
    torch random numbers pass it as ``generator=``: the default generators stay untouched."""
    return getattr(_current, 'generator', None)


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` runs ``ds.inner[index]`` with python
    ``random`` and numpy seeded by ``seed`` and :func:`sample_generator` set to a CPU
    ``torch.Generator`` seeded by ``seed``. In the main process python's and numpy's global
    generators are restored afterwards, so data loading never perturbs the training loop's
    randomness; torch's default generators (CPU and CUDA) are never seeded nor drawn from here.
    (The transforms draw from python ``random``, as BasicSR; a training loop that draws from
    python ``random`` or numpy's global generator while ``prefetch_mode: cpu`` loads in its
    thread would still race with this seeding - ours draws from torch generators only.)"""

    def __init__(self, dataset):
        self.inner = dataset

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, item):
        index, seed = item
        in_worker = get_worker_info() is not None
        if not in_worker:
            saved = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        generator = torch.Generator()
        generator.manual_seed(seed)
        outer = getattr(_current, 'generator', None)
        _current.generator = generator
        try:
            return self.inner[index]
        finally:
            _current.generator = outer
            if not in_worker:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
