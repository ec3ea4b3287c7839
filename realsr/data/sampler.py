"""BasicSR's ``EnlargedSampler``, made resumable mid-epoch and reproducible per sample.

The order is BasicSR's: each epoch a ``randperm`` of ``ceil(len * ratio / world) * world``
positions seeded by the epoch number, taken modulo the dataset length, every ``world``-th one
for this rank. Two additions make an interrupted run resume exactly:

* ``set_epoch(epoch, start)`` skips the first ``start`` samples of the epoch;
* every index comes with its own seed, derived from (seed, epoch, rank, position), which
  :class:`SeededDataset` uses for that sample's random crop and flips. A sample's
  augmentation therefore depends on where it is in the run, not on which worker process
  loaded it or how many samples that worker loaded before.
"""
import math
import random

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


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` runs ``ds.inner[index]`` with python
    ``random``, numpy and torch seeded by ``seed``. In the main process the global generators
    are restored afterwards, so data loading never perturbs the training loop's randomness."""

    def __init__(self, dataset):
        self.inner = dataset

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, item):
        index, seed = item
        in_worker = get_worker_info() is not None
        if not in_worker:
            saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            return self.inner[index]
        finally:
            if not in_worker:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])
