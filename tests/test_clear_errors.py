"""Errors a user can fix print one line through the command line (no traceback on the console;
the traceback goes to the run's log file): dataset errors (exit status 4) and CUDA out of memory
(exit status 5), simulated on the CPU by raising torch.OutOfMemoryError from the training step."""
import os

import pytest
import torch

from conftest import write_pair_folders
from test_train_e2e import train_options, write_yaml


def _cli(tmp_path, monkeypatch, capsys, opt):
    """Run realsr-train in this process; returns (exit status, stderr)."""
    from realsr import train
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train.main(['-opt', write_yaml(tmp_path / f"{opt['name']}.yml", opt)])
    return exc.value.code, capsys.readouterr().err


def _one_line(err):
    lines = [line for line in err.splitlines() if line.startswith('realsr: ')]
    assert len(lines) == 1, err[-3000:]
    assert 'Traceback' not in err, 'a dataset error must not print a traceback on the console'
    return lines[0]


def _log_text(tmp_path, name):
    logs = list((tmp_path / 'experiments' / name).glob('train_*.log'))
    assert len(logs) == 1
    return logs[0].read_text()


def test_empty_folder_is_one_line(tmp_path, monkeypatch, capsys):
    folders = write_pair_folders(tmp_path / 'data', n_train=2)
    for name in os.listdir(folders['train_gt']):
        os.remove(os.path.join(folders['train_gt'], name))
    status, err = _cli(tmp_path, monkeypatch, capsys, train_options(folders, 'empty'))
    assert status == 4
    line = _one_line(err)
    assert 'dataset error' in line and folders['train_gt'] in line and 'contains no images' in line
    assert 'Traceback' in _log_text(tmp_path, 'empty'), 'the traceback belongs in the log file'


def test_gt_without_lq_is_one_line(tmp_path, monkeypatch, capsys):
    folders = write_pair_folders(tmp_path / 'data', n_train=3)
    os.remove(os.path.join(folders['train_lq'], 'img01.png'))
    status, err = _cli(tmp_path, monkeypatch, capsys, train_options(folders, 'unpaired'))
    assert status == 4
    line = _one_line(err)
    assert os.path.join(folders['train_gt'], 'img01.png') in line
    assert os.path.join(folders['train_lq'], 'img01.png') in line


@pytest.mark.parametrize('workers', [0, 2])
def test_corrupt_image_and_size_mismatch_are_one_line(tmp_path, monkeypatch, capsys, workers):
    """Read in the main process or in a loader worker (torch re-raises a worker's error with the
    worker's traceback in its message: the line must still be the original message)."""
    import cv2
    import numpy as np
    folders = write_pair_folders(tmp_path / 'data', n_train=3)
    bad = os.path.join(folders['train_gt'], 'img02.png')
    with open(bad, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n truncated')
    opt = train_options(folders, f'corrupt{workers}', **{'datasets.train.num_worker_per_gpu': workers})
    status, err = _cli(tmp_path, monkeypatch, capsys, opt)
    assert status == 4
    line = _one_line(err)
    assert bad in line and 'Cannot decode image' in line
    assert ('data loader worker' in line) == (workers > 0)

    cv2.imwrite(bad, np.zeros((40, 48, 3), np.uint8))  # readable now, but not 4x its 12x12 LQ
    opt['name'] = f'mismatch{workers}'
    status, err = _cli(tmp_path, monkeypatch, capsys, opt)
    assert status == 4
    line = _one_line(err)
    assert bad in line and '40x48' in line and 'scale is 4' in line


def _raise_oom(*args, **kwargs):
    raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of '
                                 '79.1 GiB of which 1.2 GiB is free.')


def test_out_of_memory_in_training_names_batch_crop_arch(tmp_path, monkeypatch, capsys):
    from realsr.models.sr_model import SRModel
    monkeypatch.setattr(SRModel, 'optimize_parameters', _raise_oom)
    folders = write_pair_folders(tmp_path / 'data', n_train=3)
    opt = train_options(folders, 'oom', **{'datasets.train.num_worker_per_gpu': 0,
                                           'datasets.train.accum_iter': 2})
    status, err = _cli(tmp_path, monkeypatch, capsys, opt)
    assert status == 5
    line = _one_line(err)
    for part in ('CUDA out of memory in the training step', 'tried to allocate 2.00 gib',
                 'batch_size_per_gpu 3', 'accum_iter 2', 'gt_size 32', 'network_g MSRResNet',
                 'smaller datasets.train.batch_size_per_gpu', 'e.g. 1 and 4'):
        assert part in line, (part, line)
    assert 'OutOfMemoryError' in _log_text(tmp_path, 'oom')


def test_out_of_memory_in_validation_suggests_tiles(tmp_path, monkeypatch, capsys):
    from realsr.engine import trainer
    monkeypatch.setattr(trainer, '_validate_all', _raise_oom)
    folders = write_pair_folders(tmp_path / 'data', n_train=3)
    opt = train_options(folders, 'oomval', **{'datasets.train.num_worker_per_gpu': 0, 'train.total_iter': 2,
                                              'val.val_freq': 2})
    status, err = _cli(tmp_path, monkeypatch, capsys, opt)
    assert status == 5
    line = _one_line(err)
    assert 'CUDA out of memory in validation' in line and 'val.tile' in line and 'MSRResNet' in line


def test_out_of_memory_in_realsr_test_suggests_tiles(tmp_path, monkeypatch, capsys):
    """realsr-test: one line naming the arch and val.tile, exit 5 (no training batch to report)."""
    import cv2
    import numpy as np
    from realsr import test as test_entry
    from realsr.models.sr_model import SRModel
    from test_eval_realsrset import OPT_FILE, TINY
    lq = tmp_path / 'lq'
    lq.mkdir()
    cv2.imwrite(str(lq / 'a.png'), np.full((12, 12, 3), 128, np.uint8))
    net = tmp_path / 'net.pth'
    from realsr.registry import ARCH_REGISTRY
    torch.save({'params_ema': ARCH_REGISTRY.get('MSRResNet_details')(num_feat=8, num_block=1).state_dict()}, net)
    monkeypatch.setattr(SRModel, 'infer', _raise_oom)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        test_entry.main(['-opt', OPT_FILE, '--force_yml', f'datasets:test_1:dataroot_lq={lq}',
                         f'path:pretrain_network_g={net}', 'num_gpu=0', 'val:metrics=~', *TINY])
    assert exc.value.code == 5
    line = _one_line(capsys.readouterr().err)
    assert 'CUDA out of memory in testing' in line and 'network_g MSRResNet_details' in line and 'val.tile' in line
    assert 'batch_size_per_gpu' not in line, line
