"""DDP with dropout regularizers: 2 processes over gloo on the CPU.

Each rank seeds its RNG with ``manual_seed + rank``, so the dropout masks must differ between ranks
(otherwise both would drop the same channels and DDP would add no mask diversity), while the
averaged gradients keep the weights identical. The masks are recorded inside each training process
by wrapping ``F.dropout2d`` (what both regularizers call) and reading which (sample, channel) maps
came out all zero."""
import os

import pytest
import torch

from conftest import REPO_ROOT, write_pair_folders
from test_train_e2e import load, run, train_options, write_yaml

RECORD_MASKS = f'''import os, sys, torch
sys.path.insert(0, {str(REPO_ROOT)!r})
from torch.nn import functional as F
from realsr.runtime.checkpoint import unwrap
from realsr.engine.trainer import train_pipeline

masks, plain_dropout2d = [], F.dropout2d

def recording_dropout2d(x, p=0.5, training=True, inplace=False):
    out = plain_dropout2d(x, p, training, inplace)
    if training:  # dropped maps are all zero (a kept map of a nonzero input is not)
        masks.append((out.abs().sum((2, 3)) == 0).cpu())
    return out

F.dropout2d = recording_dropout2d
model = train_pipeline(os.getcwd(), sys.argv[1:])
rank = torch.distributed.get_rank()
torch.save({{'weights': unwrap(model.net_g).state_dict(), 'masks': masks,
            'regularizers': [type(r).__name__ for r in model.regularizers]}}, f"rank{{rank}}.pth")
'''


@pytest.mark.slow
def test_ddp_two_processes_with_dropout_regularizers(tmp_path):
    folders = write_pair_folders(tmp_path / 'data', n_train=8)
    iters = 4
    regularizers = [{'type': 'ChannelDropout', 'p': 0.7, 'sites': ['conv_last:input']},
                    {'type': 'AdaptiveDropout', 'step': 1000, 'sites': ['body.*.conv1:output']}]  # active throughout
    opt = train_options(folders, 'ddp_reg', regularizers=regularizers,
                        **{'datasets.train.batch_size_per_gpu': 2, 'datasets.train.num_worker_per_gpu': 0,
                           'train.total_iter': iters, 'logger.save_checkpoint_freq': iters})
    del opt['datasets']['val'], opt['val']  # validation is not what is tested here
    opt_file = write_yaml(tmp_path / 'ddp_reg.yml', opt)
    script = tmp_path / 'record_masks.py'
    script.write_text(RECORD_MASKS)
    port = 29500 + (os.getpid() + 500) % 1000  # not the plain DDP test's port
    proc = run(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}', str(script), '-opt',
                opt_file, '--launcher', 'pytorch'], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'World size (gpu number): 2' in proc.stderr
    r0, r1 = load(tmp_path / 'rank0.pth'), load(tmp_path / 'rank1.pth')
    assert r0['regularizers'] == r1['regularizers'] == ['ChannelDropout', 'AdaptiveDropout']

    for name in r0['weights']:  # gradients are averaged: both ranks hold the same weights
        assert torch.equal(r0['weights'][name], r1['weights'][name]), name
    saved = load(tmp_path / 'experiments' / 'ddp_reg' / 'models' / f'net_g_{iters}.pth')['params']
    assert saved.keys() == r0['weights'].keys()  # no regularizer parameters in the checkpoint
    assert torch.equal(saved['conv_last.weight'], r0['weights']['conv_last.weight'])

    # per iteration: 2 AdaptiveDropout sites (body.0/1.conv1), then ChannelDropout at conv_last
    calls_per_iter = 3
    assert len(r0['masks']) == len(r1['masks']) == iters * calls_per_iter
    m0, m1 = torch.stack(r0['masks']), torch.stack(r1['masks'])  # (calls, batch 2, channels 8)
    assert not torch.equal(m0, m1)  # each rank draws its own masks
    last0, last1 = m0[2::calls_per_iter], m1[2::calls_per_iter]  # ChannelDropout, p 0.7
    for last in (last0, last1):
        assert 0.4 < last.float().mean() < 0.95  # it really drops about 70 % of the channels
    assert (last0 != last1).float().mean() > 0.2  # and not the same ones on both ranks
