"""End to end on the CPU: train -> kill -> auto-resume -> test, DDP over gloo, bad inputs.

Every run goes through the real command line (``python realsr/train.py ...``) in a
subprocess, in a temporary working directory.
"""
import csv
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO_ROOT, write_pair_folders

TRAIN_PY = str(REPO_ROOT / 'realsr' / 'train.py')
TEST_PY = str(REPO_ROOT / 'realsr' / 'test.py')


def train_options(folders, name, **overrides):
    opt = {
        'name': name, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 10,
        'datasets': {
            'train': {'name': 'synthetic_train', 'type': 'PairedImageDataset', 'dataroot_gt': folders['train_gt'],
                      'dataroot_lq': folders['train_lq'], 'io_backend': {'type': 'disk'}, 'gt_size': 32,
                      'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 2, 'batch_size_per_gpu': 3,
                      'dataset_enlarge_ratio': 1},
            'val': {'name': 'synthetic_val', 'type': 'PairedImageDataset', 'dataroot_gt': folders['val_gt'],
                    'dataroot_lq': folders['val_lq'], 'io_backend': {'type': 'disk'}},
        },
        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [5, 9], 'gamma': 0.5},
                  'total_iter': 12, 'warmup_iter': 2, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': 6, 'save_img': True, 'compare_bicubic': True,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': 4, 'better': 'higher'}}},
        'logger': {'print_freq': 2, 'save_checkpoint_freq': 4, 'use_tb_logger': True},
    }
    return set_dotted(opt, overrides)


def set_dotted(opt, overrides):
    """Set ``{'a.b.c': value}`` entries in the nested option dict ``opt``; returns ``opt``."""
    for dotted, value in overrides.items():
        node = opt
        keys = dotted.split('.')
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return opt


def write_yaml(path, opt):
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return str(path)


def run(args, cwd, env_extra=None, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    env.update(env_extra or {})
    return subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f'{key}/{name} differs'


@pytest.mark.slow
def test_train_kill_resume_test_is_exact(tmp_path):
    folders = write_pair_folders(tmp_path / 'data', n_train=9)
    # 9 images, batch 3 -> 3 iterations per epoch: both kills (after the checkpoints of
    # iterations 4 and 8) land in the middle of an epoch.
    full = run([TRAIN_PY, '-opt', write_yaml(tmp_path / 'full.yml', train_options(folders, 'full'))], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    log = full.stderr
    assert re.search(r'eta: \d+:\d\d:\d\d', log) and 'it/s' in log and 'peak mem:' in log and 'l_pix:' in log
    assert re.search(r'\d+/12 \[', log), 'no progress bar in the output'
    assert 'Bicubic:' in log
    assert list((tmp_path / 'tb_logger' / 'full').glob('events.out.tfevents*')), 'no tensorboard events'

    exp = tmp_path / 'experiments' / 'resumed'
    opt_file = write_yaml(tmp_path / 'resumed.yml', train_options(folders, 'resumed'))
    killed = run([TRAIN_PY, '-opt', opt_file], tmp_path, {'REALSR_TEST_KILL_AFTER_ITER': '4'})
    assert killed.returncode == -signal.SIGKILL
    assert (exp / 'training_states' / '4.state').is_file() and not (exp / 'models' / 'net_g_8.pth').exists()
    # no temporary checkpoint file is left behind by the kill
    assert not [p for p in exp.rglob('*') if '.tmp-' in p.name]

    resumed = run([TRAIN_PY, '-opt', opt_file, '--auto_resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Resuming training from epoch: 1, iter: 4' in resumed.stderr

    full_models = tmp_path / 'experiments' / 'full' / 'models'
    assert_same_weights(load(full_models / 'net_g_12.pth'), load(exp / 'models' / 'net_g_12.pth'))
    assert_same_weights(load(full_models / 'net_g_latest.pth'), load(exp / 'models' / 'net_g_latest.pth'))
    w4, w12 = load(full_models / 'net_g_4.pth'), load(full_models / 'net_g_12.pth')
    assert not torch.equal(w4['params']['conv_first.weight'], w12['params']['conv_first.weight'])
    assert not torch.equal(w12['params']['conv_first.weight'], w12['params_ema']['conv_first.weight'])

    # a second kill, mid-epoch this time, then resume again: still exact
    opt_file2 = write_yaml(tmp_path / 'resumed2.yml', train_options(folders, 'resumed2'))
    assert run([TRAIN_PY, '-opt', opt_file2], tmp_path, {'REALSR_TEST_KILL_AFTER_ITER': '8'}).returncode == -9
    state = torch.load(tmp_path / 'experiments' / 'resumed2' / 'training_states' / '8.state', weights_only=False)
    assert state['batches_done'] == 2 and state['epoch'] == 2 and 'rng' in state
    assert run([TRAIN_PY, '-opt', opt_file2, '--auto_resume'], tmp_path).returncode == 0
    assert_same_weights(load(full_models / 'net_g_12.pth'),
                        load(tmp_path / 'experiments' / 'resumed2' / 'models' / 'net_g_12.pth'))

    # test the resumed model on two datasets, from a BasicSR-style test file
    test_opt = {
        'name': 'resumed_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0,
        'datasets': {
            'test_1': {'name': 'synthetic_val', 'type': 'PairedImageDataset', 'dataroot_gt': folders['val_gt'],
                       'dataroot_lq': folders['val_lq'], 'io_backend': {'type': 'disk'}},
            'test_2': {'name': 'synthetic_train', 'type': 'PairedImageDataset', 'dataroot_gt': folders['train_gt'],
                       'dataroot_lq': folders['train_lq'], 'io_backend': {'type': 'disk'}},
        },
        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4},
        'path': {'pretrain_network_g': str(exp / 'models' / 'net_g_latest.pth'), 'param_key_g': 'params_ema',
                 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': 4}}},
    }
    tested = run([TEST_PY, '-opt', write_yaml(tmp_path / 'test.yml', test_opt)], tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    results = tmp_path / 'results' / 'resumed_test'
    with open(results / 'metrics_per_image.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 + 9 and set(rows[0]) == {'dataset', 'image', 'psnr', 'ssim'}
    assert (results / 'metrics.md').read_text().count('| synthetic_') == 2
    assert len(list((results / 'visualization' / 'synthetic_val').glob('*_resumed_test.png'))) == 2
    # the test run's average equals the training run's final validation of the EMA network
    val_psnr = float(re.findall(r'# psnr: ([\d.]+)', resumed.stderr)[-1])
    with open(results / 'metrics_average.csv') as f:
        avg = {r['dataset']: float(r['psnr']) for r in csv.DictReader(f)}
    assert avg['synthetic_val'] == pytest.approx(val_psnr, abs=1e-4)


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    folders = write_pair_folders(tmp_path / 'data', n_train=8)
    opt = train_options(folders, 'ddp', **{'datasets.train.batch_size_per_gpu': 2, 'train.total_iter': 6,
                                           'datasets.train.num_worker_per_gpu': 0, 'val.val_freq': 3})
    opt['dist_params'] = {'backend': 'gloo'}  # honoured under torchrun too (was read for Slurm only)
    opt_file = write_yaml(tmp_path / 'ddp.yml', opt)
    dump = tmp_path / 'dump_weights.py'
    dump.write_text(
        'import os, sys, torch\n'
        f'sys.path.insert(0, {str(REPO_ROOT)!r})\n'
        'from realsr.engine.trainer import train_pipeline\n'
        'from realsr.runtime.checkpoint import unwrap\n'
        'model = train_pipeline(os.getcwd(), sys.argv[1:])\n'
        'rank = torch.distributed.get_rank()\n'
        'torch.save(unwrap(model.net_g).state_dict(), f"rank{rank}.pth")\n')
    port = 29500 + os.getpid() % 1000
    proc = run(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}', str(dump), '-opt',
                opt_file, '--launcher', 'pytorch'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = load(tmp_path / 'rank0.pth'), load(tmp_path / 'rank1.pth')
    for name in r0:  # gradients are averaged, so both ranks hold the same weights
        assert torch.equal(r0[name], r1[name]), name
    first = load(tmp_path / 'experiments' / 'ddp' / 'models' / 'net_g_4.pth')['params']
    assert not torch.equal(first['conv_first.weight'], r0['conv_first.weight'])
    assert 'World size (gpu number): 2' in proc.stderr


# -- bad inputs: each gets a message naming the key, file or value -------------------------
def _train_in_process(opt_file, tmp_path, monkeypatch):
    from realsr import train
    monkeypatch.chdir(tmp_path)
    return train.main(['-opt', opt_file])


def test_missing_folder_names_key_and_value(tmp_path, pair_folders, monkeypatch, capsys):
    opt = train_options(pair_folders, 'bad', **{'datasets.train.dataroot_lq': str(tmp_path / 'nope')})
    with pytest.raises(SystemExit) as exc:
        _train_in_process(write_yaml(tmp_path / 'bad.yml', opt), tmp_path, monkeypatch)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'datasets.train.dataroot_lq'" in err and 'nope' in err and 'does not exist' in err
    assert not (tmp_path / 'experiments' / 'bad').exists(), 'nothing may be written for an invalid file'


def test_unknown_key_names_path_and_closest_key(tmp_path, pair_folders, monkeypatch, capsys):
    opt = train_options(pair_folders, 'bad')
    opt['train']['optim_g']['lrr'] = opt['train']['optim_g'].pop('lr')
    opt['logger']['print_frq'] = 1
    with pytest.raises(SystemExit):
        _train_in_process(write_yaml(tmp_path / 'bad.yml', opt), tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert "unknown key 'train.optim_g.lrr'; did you mean 'lr'?" in err
    assert "unknown key 'logger.print_frq'; did you mean 'print_freq'?" in err


def _data_error(tmp_path, folders, monkeypatch, **overrides):
    """The message of the DatasetError the pipeline raises (the command line prints it as one line,
    exit status 4: tests/test_clear_errors.py)."""
    from realsr.data.errors import DatasetError
    from realsr.engine.trainer import train_pipeline
    opt = train_options(folders, 'bad', **{'datasets.train.num_worker_per_gpu': 0, **overrides})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as exc:
        train_pipeline(str(tmp_path), ['-opt', write_yaml(tmp_path / 'bad.yml', opt)])
    return str(exc.value)


def test_corrupt_image_names_the_file(tmp_path, pair_folders, monkeypatch):
    bad = os.path.join(pair_folders['train_gt'], 'img03.png')
    with open(bad, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n truncated')
    message = _data_error(tmp_path, pair_folders, monkeypatch)
    assert 'img03.png' in message


def test_corrupt_image_is_skipped_with_a_warning_when_asked(tmp_path, pair_folders, monkeypatch, capsys):
    bad = os.path.join(pair_folders['train_gt'], 'img03.png')
    with open(bad, 'wb') as f:
        f.write(b'not an image at all')
    opt = train_options(pair_folders, 'skip', **{'datasets.train.num_worker_per_gpu': 0,
                                                 'datasets.train.skip_bad_images': True, 'train.total_iter': 8,
                                                 'datasets.train.batch_size_per_gpu': 4})
    _train_in_process(write_yaml(tmp_path / 'skip.yml', opt), tmp_path, monkeypatch)
    assert (tmp_path / 'experiments' / 'skip' / 'models' / 'net_g_8.pth').is_file()
    warnings = [line for line in capsys.readouterr().err.splitlines() if 'WARNING' in line and 'img03.png' in line]
    assert warnings, 'the skipped image must be named in a warning'


def test_lq_gt_size_mismatch_names_files_and_sizes(tmp_path, pair_folders, monkeypatch):
    import cv2
    import numpy as np
    cv2.imwrite(os.path.join(pair_folders['train_lq'], 'img02.png'), np.zeros((10, 12, 3), np.uint8))
    message = _data_error(tmp_path, pair_folders, monkeypatch)
    assert 'img02.png' in message and '10' in message and '48' in message


def test_wrong_scale_is_reported(tmp_path, pair_folders, monkeypatch):
    message = _data_error(tmp_path, pair_folders, monkeypatch, **{'scale': 2, 'network_g.upscale': 2})
    assert 'scale' in message and '12' in message and '48' in message


def test_grayscale_images_train_as_three_channels(tmp_path, monkeypatch):
    import cv2
    folders = write_pair_folders(tmp_path / 'data', n_train=4)
    for key in ('train_gt', 'train_lq'):
        path = os.path.join(folders[key], 'img01.png')
        cv2.imwrite(path, cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY))
    opt = train_options(folders, 'gray', **{'datasets.train.num_worker_per_gpu': 0, 'train.total_iter': 4,
                                            'datasets.train.batch_size_per_gpu': 4})
    _train_in_process(write_yaml(tmp_path / 'gray.yml', opt), tmp_path, monkeypatch)
    assert (tmp_path / 'experiments' / 'gray' / 'models' / 'net_g_4.pth').is_file()


def test_odd_sizes_validate_with_gt_crop(tmp_path, monkeypatch):
    """A GT whose size is not a multiple of the scale is cropped to LQ*scale at validation."""
    import cv2
    folders = write_pair_folders(tmp_path / 'data', n_train=4)
    gt = cv2.imread(os.path.join(folders['val_gt'], 'img00.png'))
    cv2.imwrite(os.path.join(folders['val_gt'], 'img00.png'), cv2.copyMakeBorder(gt, 0, 3, 0, 2, cv2.BORDER_REFLECT))
    opt = train_options(folders, 'odd', **{'datasets.train.num_worker_per_gpu': 0, 'train.total_iter': 2,
                                           'datasets.train.batch_size_per_gpu': 4, 'val.val_freq': 2})
    _train_in_process(write_yaml(tmp_path / 'odd.yml', opt), tmp_path, monkeypatch)
    assert (tmp_path / 'experiments' / 'odd' / 'visualization' / 'img00' / 'img00_2.png').is_file()


@pytest.mark.slow
def test_resume_is_exact_with_dropout_regularizers(tmp_path):
    """Dropout draws from the global torch RNG during training: the saved RNG states (and the
    closed-form AdaptiveDropout schedule) make a killed and resumed run bit-identical."""
    folders = write_pair_folders(tmp_path / 'data', n_train=9)
    regs = [{'type': 'ChannelDropout', 'p': 0.5},
            {'type': 'AdaptiveDropout', 'step': 3, 'sites': ['body.0.conv1:output', 'body.1.conv1:output']}]

    def opt_file(name):
        return write_yaml(tmp_path / f'{name}.yml', train_options(folders, name, regularizers=regs))

    assert run([TRAIN_PY, '-opt', opt_file('full')], tmp_path).returncode == 0
    cut = opt_file('cut')
    assert run([TRAIN_PY, '-opt', cut], tmp_path, {'REALSR_TEST_KILL_AFTER_ITER': '4'}).returncode == -signal.SIGKILL
    resumed = run([TRAIN_PY, '-opt', cut, '--auto_resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Regularizer: ChannelDropout' in resumed.stderr
    assert_same_weights(load(tmp_path / 'experiments' / 'full' / 'models' / 'net_g_12.pth'),
                        load(tmp_path / 'experiments' / 'cut' / 'models' / 'net_g_12.pth'))
