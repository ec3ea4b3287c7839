"""Datasets, io backends, transforms, sampler and loaders.

Dataset classes register themselves in ``DATASET_REGISTRY`` and are imported lazily by it.
"""
import copy

from realsr.registry import DATASET_REGISTRY


def build_dataset(dataset_opt):
    """Build a dataset from its option dict (``type`` names the registered class)."""
    dataset_opt = copy.deepcopy(dataset_opt)
    return DATASET_REGISTRY.get(dataset_opt['type'])(dataset_opt)
