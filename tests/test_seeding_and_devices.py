"""Per-sample seeding leaves torch's default generators alone, and a degradation-generator state
saved on another device type is reseeded (with a warning) instead of failing the resume."""
import copy
import logging
import random
import sys
import threading

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from conftest import write_pair_folders
from realsr.data.paired_image_dataset import PairedImageDataset
from realsr.data.sampler import EnlargedSampler, SeededDataset, sample_generator, sample_seed
from realsr.degradations.pipeline import OFFICIAL_KERNEL_OPT


# -- SeededDataset -------------------------------------------------------------------------------
@pytest.fixture()
def paired(tmp_path):
    folders = write_pair_folders(tmp_path, n_train=4, n_val=1, hr_size=48)
    return PairedImageDataset({
        'name': 't', 'type': 'PairedImageDataset', 'phase': 'train', 'dataroot_gt': folders['train_gt'],
        'dataroot_lq': folders['train_lq'], 'io_backend': {'type': 'disk'}, 'gt_size': 16, 'scale': 4,
        'use_hflip': True, 'use_rot': True})


class TorchDrawingDataset(Dataset):
    """Draws torch random numbers the way datasets should: from :func:`sample_generator`."""

    def __len__(self):
        return 3

    def __getitem__(self, index):
        g = sample_generator()
        assert g is not None and g.device.type == 'cpu'
        return {'noise': torch.rand(4, generator=g), 'py': random.random(), 'np': float(np.random.rand()),
                'index': index}


def _forbid_global_seeding(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError('per-sample seeding must not seed torch\'s default (CPU/CUDA) generators')

    for owner, name in ((torch, 'manual_seed'), (torch.random, 'manual_seed'), (torch.cuda, 'manual_seed'),
                        (torch.cuda, 'manual_seed_all'), (torch, 'set_rng_state'), (torch.random, 'set_rng_state'),
                        (torch.cuda, 'set_rng_state'), (torch.cuda, 'set_rng_state_all'), (torch, 'seed')):
        monkeypatch.setattr(owner, name, forbidden)


@pytest.mark.parametrize('inner', ['paired', 'torch_drawing'])
def test_seeded_fetch_leaves_the_default_generators_untouched(inner, paired, monkeypatch):
    ds = SeededDataset(paired if inner == 'paired' else TorchDrawingDataset())
    torch.manual_seed(1234)
    torch.rand(3)  # a state that is not the freshly seeded one
    cpu_state, initial_seed = torch.get_rng_state(), torch.random.default_generator.initial_seed()
    py_state, np_state = random.getstate(), np.random.get_state()
    _forbid_global_seeding(monkeypatch)
    for position, index in enumerate([0, 1, 2, 1, 0]):
        ds[(index, sample_seed(7, 3, 0, position))]
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert torch.random.default_generator.initial_seed() == initial_seed
    assert random.getstate() == py_state
    restored = np.random.get_state()
    assert restored[0] == np_state[0] and np.array_equal(restored[1], np_state[1]) and restored[2:] == np_state[2:]
    assert sample_generator() is None  # only set while a sample loads


def test_same_index_and_seed_give_the_same_sample(paired):
    ds = SeededDataset(paired)
    seed = sample_seed(3, 2, 0, 5)
    a, b = ds[(1, seed)], ds[(1, seed)]
    assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])
    others = [ds[(1, sample_seed(3, 2, 0, p))]['gt'] for p in range(6, 14)]
    assert any(not torch.equal(a['gt'], o) for o in others)  # the crop/flip depend on the seed

    drawing = SeededDataset(TorchDrawingDataset())
    x, y = drawing[(2, seed)], drawing[(2, seed)]
    assert torch.equal(x['noise'], y['noise']) and x['py'] == y['py'] and x['np'] == y['np']
    assert not torch.equal(x['noise'], drawing[(2, seed + 1)]['noise'])


def test_sampler_epoch_and_position_give_the_same_samples(paired):
    ds = SeededDataset(paired)
    sampler = EnlargedSampler(paired, 1, 0, seed=11)

    def epoch(e, start=0):
        sampler.set_epoch(e, start)
        return [ds[item] for item in sampler]

    first, again, resumed = epoch(2), epoch(2), epoch(2, start=2)
    for a, b in zip(first, again):
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])
    for a, b in zip(first[2:], resumed):  # resuming mid-epoch gives the same later samples
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])


def test_background_thread_fetches_do_not_disturb_the_main_threads_torch_draws():
    """prefetch_mode: cpu loads in a thread while the training loop draws (dropout): the loop's
    draws must be those it would make without the loader."""
    ds = SeededDataset(TorchDrawingDataset())
    stop, fetched = threading.Event(), [0]

    def load():
        while not stop.is_set():
            ds[(fetched[0] % 3, sample_seed(0, 0, 0, fetched[0]))]
            fetched[0] += 1

    thread = threading.Thread(target=load, daemon=True)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # let the threads interleave often
    reference = torch.Generator().manual_seed(99)  # the same stream as the default generator seeded 99
    mismatches = draws = 0
    try:
        torch.manual_seed(99)
        thread.start()
        while draws < 20000 or (fetched[0] < 50 and draws < 2000000):
            mismatches += not torch.equal(torch.rand(64), torch.rand(64, generator=reference))
            draws += 1
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    assert fetched[0] >= 50, 'the loader thread did not run alongside the draws'
    assert mismatches == 0, f'{mismatches} of {draws} draws of the main thread were disturbed'


# -- the degradation generator across device types -----------------------------------------------
def esrnet_opt(tmp_path):
    return {
        'name': 'tiny', 'model_type': 'RealESRNetModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 3, 'is_train': True,
        'gt_size': 32, 'queue_size': 4,
        'datasets': {'train': dict(OFFICIAL_KERNEL_OPT, name='gt', type='RealESRGANDataset', batch_size_per_gpu=2,
                                   crop_pad_size=80)},
        'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1,
                      'num_grow_ch': 4},
        'path': {'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'training_states')},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
    }


def gt_batch(seed):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(2, 3, 8, 8, generator=g)
    return {'gt': torch.nn.functional.interpolate(low, size=(80, 80), mode='bilinear', align_corners=False)}


@pytest.fixture()
def esrnet(tmp_path):
    from realsr.models.realesrgan_model import RealESRNetModel

    def make():
        return RealESRNetModel(copy.deepcopy(esrnet_opt(tmp_path)))

    model = make()
    for it in range(1, 4):  # fills the pool (size 4) and draws from it
        model.feed_data(gt_batch(it))
    return model, make


def test_same_device_state_is_restored_exactly(esrnet, caplog):
    model, make = esrnet
    state = copy.deepcopy(model.extra_training_state())
    resumed = make()
    with caplog.at_level(logging.WARNING, logger='realsr'):
        resumed.load_extra_training_state(dict(state, iter=3))
    assert not [r for r in caplog.records if 'Degradation generator' in r.getMessage()]
    assert torch.equal(resumed.degradation_generator.get_state(), model.degradation_generator.get_state())
    for k, v in model.pair_pool.pool.items():
        assert torch.equal(resumed.pair_pool.pool[k], v)
    assert resumed.pair_pool.ptr == model.pair_pool.ptr
    for m in (model, resumed):
        m.feed_data(gt_batch(10))
    assert torch.equal(model.lq, resumed.lq) and torch.equal(model.gt, resumed.gt)


def test_generator_state_from_another_device_type_is_reseeded_with_a_warning(esrnet, caplog):
    model, make = esrnet
    state = copy.deepcopy(model.extra_training_state())
    assert state['degradation_generator'].numel() == 5056  # a CPU generator's state
    # what a CUDA generator's get_state() gives: 16 bytes (seed and philox offset)
    state['degradation_generator'] = torch.arange(16, dtype=torch.uint8)
    resumed, again = make(), make()
    with caplog.at_level(logging.WARNING, logger='realsr'):
        resumed.load_extra_training_state(dict(state, iter=3))
    warnings = [r.getMessage() for r in caplog.records if r.name == 'realsr' and r.levelno == logging.WARNING]
    assert any('device type changed' in w and 'reseeded' in w and 'not bit-identical' in w for w in warnings), warnings
    # the pool was still restored onto this run's device
    for k, v in model.pair_pool.pool.items():
        assert resumed.pair_pool.pool[k].device == resumed.device and torch.equal(resumed.pair_pool.pool[k], v)
    # the generator works, and the reseeding is deterministic (same state file -> same stream)
    again.load_extra_training_state(dict(state, iter=3))
    assert torch.equal(resumed.degradation_generator.get_state(), again.degradation_generator.get_state())
    assert not torch.equal(resumed.degradation_generator.get_state(), make().degradation_generator.get_state())
    for m in (resumed, again):
        m.feed_data(gt_batch(10))
    assert resumed.lq.shape == (2, 3, 8, 8) and resumed.gt.shape == (2, 3, 32, 32)
    assert torch.isfinite(resumed.lq).all() and torch.equal(resumed.lq, again.lq)
    # a later resume iteration gives another stream
    later = make()
    later.load_extra_training_state(dict(state, iter=7))
    assert not torch.equal(later.degradation_generator.get_state(), resumed.degradation_generator.get_state())
