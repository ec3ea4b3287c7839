"""Exact resume under DDP: every rank saves and restores its own random streams.

A run of 2 gloo processes is killed right after a checkpoint and resumed with ``--auto_resume``; it
must end bit-identical to an uninterrupted run (CPU, same code path and same process layout, so
equality is exact). The run uses both sources of per-rank randomness: ChannelDropout draws its
masks from each rank's global torch generator, and RealESRNetModel degrades each rank's GT crops
with that rank's degradation generator and keeps that rank's training-pair pool. Had rank 1
restored rank 0's states, its masks and degradations, hence its gradients, the averaged gradients
and the weights would differ (measured: see the docstring of :func:`test_ddp_kill_resume_is_exact`).

The in-process tests below check the per-rank files themselves with a fake world of 2 ranks.
"""
import copy
import os

import pytest
import torch

from conftest import REPO_ROOT, write_pair_folders
from test_checkpoint_hygiene import realsr_log  # noqa: F401 (a fixture)
from test_train_e2e import load, run, write_yaml
from realsr.degradations.pipeline import OFFICIAL_KERNEL_OPT
from realsr.engine import resume
from realsr.runtime import checkpoint
from realsr.runtime.checkpoint import ResumeError
from realsr.runtime.rng import capture_rng_state, set_random_seed

KEEP_RANKS = f'''import os, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from realsr.engine.trainer import train_pipeline
train_pipeline(os.getcwd(), sys.argv[1:])
'''


def esrnet_ddp_options(folders, name):
    """Real-ESRNet on the fly (a tiny RRDBNet, 32-pixel crops, a pool of 4) with ChannelDropout."""
    return {
        'name': name, 'model_type': 'RealESRNetModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 5,
        'gt_usm': True, 'resize_prob': [0.2, 0.7, 0.1], 'resize_range': [0.15, 1.5], 'gaussian_noise_prob': 0.5,
        'noise_range': [1, 30], 'poisson_scale_range': [0.05, 3], 'gray_noise_prob': 0.4, 'jpeg_range': [30, 95],
        'second_blur_prob': 0.8, 'resize_prob2': [0.3, 0.4, 0.3], 'resize_range2': [0.3, 1.2],
        'gaussian_noise_prob2': 0.5, 'noise_range2': [1, 25], 'poisson_scale_range2': [0.05, 2.5],
        'gray_noise_prob2': 0.4, 'jpeg_range2': [30, 95], 'gt_size': 32, 'queue_size': 4,
        'datasets': {'train': dict(copy.deepcopy(OFFICIAL_KERNEL_OPT), name='gt', type='RealESRGANDataset',
                                   dataroot_gt=folders['train_gt'], io_backend={'type': 'disk'}, blur_kernel_size=21,
                                   blur_kernel_size2=21, gt_size=32, use_hflip=True, use_rot=False,
                                   num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1,
                                   crop_pad_size=80)},
        'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'num_grow_ch': 4},
        'regularizers': [{'type': 'ChannelDropout', 'p': 0.5}],
        'path': {'pretrain_network_g': None, 'resume_state': None},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'total_iter': 6, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'logger': {'print_freq': 2, 'save_checkpoint_freq': 3, 'use_tb_logger': False},
    }


def torchrun(tmp_path, script, opt_file, port, *extra, env=None):
    return run(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}', str(script), '-opt',
                opt_file, '--launcher', 'pytorch', *extra], tmp_path, env, timeout=240)


@pytest.mark.slow
def test_ddp_kill_resume_is_exact(tmp_path):
    """Uninterrupted vs killed after the checkpoint of iteration 3 and auto-resumed, 2 ranks each.

    Measured once by hand with the mutation "every rank restores rank 0's part" (rank 1 reading
    the main file's entries instead of its own file): net_g_6.pth then differed in 42 of 42 tensors
    of params (max 3.0e-3) and of params_ema (max 6.4e-4); with per-rank parts every tensor is equal."""
    folders = write_pair_folders(tmp_path / 'data', n_train=8, n_val=1, hr_size=48)  # 2 batches per epoch per rank
    script = tmp_path / 'train_ranks.py'
    script.write_text(KEEP_RANKS)
    port = 29500 + (os.getpid() + 300) % 1000

    full = torchrun(tmp_path, script, write_yaml(tmp_path / 'full.yml', esrnet_ddp_options(folders, 'full')), port)
    assert full.returncode == 0, full.stderr[-4000:]
    cut_file = write_yaml(tmp_path / 'cut.yml', esrnet_ddp_options(folders, 'cut'))
    killed = torchrun(tmp_path, script, cut_file, port + 1, env={'REALSR_TEST_KILL_AFTER_ITER': '3'})
    assert killed.returncode != 0
    states = tmp_path / 'experiments' / 'cut' / 'training_states'
    assert sorted(p.name for p in states.iterdir()) == ['3.rank1.state', '3.state']
    main, part = load(states / '3.state'), load(states / '3.rank1.state')
    assert main['world_size'] == 2 and 'optimizers' in main and 'optimizers' not in part
    # each rank's own streams: global torch RNG (dropout), degradation generator and pool differ
    assert not torch.equal(main['rng']['torch'], part['rng']['torch'])
    assert not torch.equal(main['degradation_generator'], part['degradation_generator'])
    assert not torch.equal(main['pair_pool']['pool']['lq'], part['pair_pool']['pool']['lq'])
    assert main['batches_done'] == part['batches_done'] == 1 and main['epoch'] == 1  # mid-epoch

    resumed = torchrun(tmp_path, script, cut_file, port + 2, '--auto_resume')
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert 'Resuming training from epoch: 1, iter: 3' in resumed.stderr
    a = load(tmp_path / 'experiments' / 'full' / 'models' / 'net_g_6.pth')
    b = load(tmp_path / 'experiments' / 'cut' / 'models' / 'net_g_6.pth')
    for key in ('params', 'params_ema'):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f'{key}/{name} differs after the DDP resume'


# -- the per-rank parts, in one process with a fake world of 2 ---------------------------------------
@pytest.fixture()
def fake_world(monkeypatch):
    """``set_rank(r)`` makes checkpoint and resume see rank ``r`` of 2 (collectives are no-ops)."""
    world = {'rank': 0}
    monkeypatch.setattr(checkpoint, 'get_dist_info', lambda: (world['rank'], 2))
    monkeypatch.setattr(resume, 'get_dist_info', lambda: (world['rank'], 2))
    monkeypatch.setattr(checkpoint, '_all_ranks_ok', lambda ok: ok)

    def set_rank(rank):
        world['rank'] = rank
    return set_rank


def _opt(tmp_path):
    return {'path': {'training_states': str(tmp_path / 'training_states'), 'models': str(tmp_path / 'models')},
            'network_g': {'type': 'MSRResNet', 'num_feat': 8}}


def _write_two_ranks(tmp_path, set_rank):
    parts = {}
    for rank in (1, 0):  # rank 0 writes the main file after every other part
        set_random_seed(10 + rank)  # what parse_options does: manual_seed + rank
        parts[rank] = {'rng': capture_rng_state(), 'batches_done': 3}
        set_rank(rank)
        checkpoint.write_training_state(str(tmp_path / 'training_states'), 3,
                                        {'iter': 3, 'epoch': 1, 'optimizers': [], 'schedulers': [],
                                         'networks': checkpoint.network_specs(_opt(tmp_path))}, parts[rank])
    return parts


def test_each_rank_restores_its_own_part(tmp_path, fake_world):
    parts = _write_two_ranks(tmp_path, fake_world)
    state_path = str(tmp_path / 'training_states' / '3.state')
    assert os.path.isfile(checkpoint.rank_state_path(state_path, 1))
    assert not torch.equal(parts[0]['rng']['torch'], parts[1]['rng']['torch'])
    for rank in (0, 1):
        fake_world(rank)
        state = resume.read_state_for_this_rank(state_path, _opt(tmp_path))
        assert state['world_size'] == 2 and state['iter'] == 3
        assert torch.equal(state['rng']['torch'], parts[rank]['rng']['torch']), f'rank {rank} got another part'
        assert state['rng']['python'] == parts[rank]['rng']['python']


def test_another_world_size_is_refused_naming_both(tmp_path, fake_world, monkeypatch):
    _write_two_ranks(tmp_path, fake_world)
    monkeypatch.setattr(resume, 'get_dist_info', lambda: (0, 4))
    with pytest.raises(ResumeError, match=r'world size 2\).*world size 4'):
        resume.read_state_for_this_rank(str(tmp_path / 'training_states' / '3.state'), _opt(tmp_path))


def test_state_without_rank_parts_resumes_with_a_warning(tmp_path, fake_world, realsr_log):
    """A BasicSR (or older realsr) state has no world size and no rank files: still resumed, with a warning."""
    path = tmp_path / 'training_states' / '3.state'
    checkpoint.atomic_save({'iter': 3, 'epoch': 1, 'optimizers': [], 'schedulers': []}, path)
    fake_world(1)
    state = resume.read_state_for_this_rank(str(path), _opt(tmp_path))
    assert state['iter'] == 3
    assert 'no per-rank parts' in realsr_log.text()


def test_missing_rank_part_is_skipped_by_auto_resume(tmp_path, fake_world):
    _write_two_ranks(tmp_path, fake_world)
    models = tmp_path / 'models'
    checkpoint.atomic_save({'params': {'w': torch.ones(1)}}, models / 'net_g_3.pth')
    found, _, skipped = checkpoint.find_resumable_state(str(tmp_path / 'training_states'), str(models))
    assert found.endswith('3.state') and not skipped
    os.remove(tmp_path / 'training_states' / '3.rank1.state')
    found, _, skipped = checkpoint.find_resumable_state(str(tmp_path / 'training_states'), str(models))
    assert found is None and '3.rank1.state' in skipped[0]


def test_no_main_file_when_a_rank_could_not_write_its_part(tmp_path, fake_world, monkeypatch):
    """The main file is written last and only when every part is on disk, so it always means a complete set."""
    monkeypatch.setattr(checkpoint, '_all_ranks_ok', lambda ok: False)  # rank 1's part failed (e.g. disk full)
    with pytest.raises(RuntimeError, match='another rank could not write its part'):
        checkpoint.write_training_state(str(tmp_path), 3, {'iter': 3}, {'rng': capture_rng_state()})
    assert not (tmp_path / '3.state').exists()
