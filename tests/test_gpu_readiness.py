"""Defects that only a GPU would show, caught on the CPU (gloo DDP, a patched device check).

- Validation with an arch that has buffers (SwinIR: ``relative_position_index``, ``attn_mask``)
  under 2-process DDP without EMA: DDP's forward broadcasts buffers, so running the wrapped
  net_g on rank 0 alone hung until the collective timed out. Inference now uses the bare module.
- ``realsr-test --launcher pytorch`` wrapped the network in DDP and hung the same way.
- DataParallel splits ``[view1; view2]`` between replicas: Simple-Align is refused under it.
"""
import os

import pytest
import torch

from conftest import write_pair_folders
from test_train_e2e import TEST_PY, TRAIN_PY, run, train_options, write_yaml

SWINIR_TINY = {'type': 'SwinIR', 'upscale': 4, 'img_size': 8, 'window_size': 4, 'embed_dim': 12, 'depths': [2],
               'num_heads': [2], 'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect'}


def _port(offset):
    return 29500 + (os.getpid() + offset) % 1000


@pytest.mark.slow
def test_ddp_validation_without_ema_with_swinir_finishes(tmp_path):
    """2 gloo processes train SwinIR (buffers!) without EMA and validate twice; before the fix the
    second rank never joined rank 0's buffer broadcast and the run hung (here: the 120 s timeout)."""
    folders = write_pair_folders(tmp_path / 'data', n_train=8, hr_size=32)
    opt = train_options(folders, 'ddp_swinir', **{
        'network_g': SWINIR_TINY, 'model_type': 'SwinIRModel', 'train.ema_decay': 0,
        'datasets.train.batch_size_per_gpu': 2, 'datasets.train.num_worker_per_gpu': 0,
        'datasets.train.gt_size': 16, 'train.total_iter': 4, 'val.val_freq': 2,
        'logger.save_checkpoint_freq': 4})
    proc = run(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_port(700)}', TRAIN_PY, '-opt',
                write_yaml(tmp_path / 'ddp_swinir.yml', opt), '--launcher', 'pytorch'], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count('Validation synthetic_val') >= 2  # at iter 2, 4 (and the final one)

    test_opt = {
        'name': 'ddp_swinir_test', 'model_type': 'SwinIRModel', 'scale': 4, 'num_gpu': 0,
        'datasets': {'test_1': {'name': 'synthetic_val', 'type': 'PairedImageDataset',
                                'dataroot_gt': folders['val_gt'], 'dataroot_lq': folders['val_lq'],
                                'io_backend': {'type': 'disk'}}},
        'network_g': SWINIR_TINY,
        'path': {'pretrain_network_g': str(tmp_path / 'experiments' / 'ddp_swinir' / 'models' / 'net_g_latest.pth')},
        'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
    }
    tested = run(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_port(800)}', TEST_PY, '-opt',
                  write_yaml(tmp_path / 'test.yml', test_opt), '--launcher', 'pytorch'], tmp_path, timeout=120)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert (tmp_path / 'results' / 'ddp_swinir_test' / 'metrics.md').is_file()


def test_data_parallel_refuses_feature_alignment(monkeypatch, tmp_path):
    """DataParallel (num_gpu > 1 without a launcher) with a two-view regularizer is refused with
    the torchrun command. This machine has no GPU: the device check is patched, and so is the
    wrapper (a CPU build of torch cannot construct DataParallel)."""
    from realsr.models import base_model, build_model
    monkeypatch.setattr(base_model.BaseModel, 'uses_data_parallel', lambda self: True)
    monkeypatch.setattr(base_model, 'DataParallel', lambda net: net)
    opt = {
        'name': 'dp', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 2, 'device': 'cpu', 'is_train': True,
        'dist': False,
        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4},
        'regularizers': [{'type': 'FeatureAlignment', 'sites': ['conv_last:input']}],
        'path': {}, 'datasets': {'train': {'batch_size_per_gpu': 2}},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'pixel_opt': {'type': 'L1Loss'}, 'total_iter': 1},
    }
    refusal = r'FeatureAlignment cannot run under DataParallel.*torchrun --nproc_per_node=2'
    with pytest.raises(ValueError, match=refusal):
        build_model(opt)
    opt['regularizers'] = [{'type': 'ChannelDropout', 'p': 0.5}]  # per-sample masks: fine under DataParallel
    assert build_model(opt).regularizers


def test_inference_uses_the_bare_network(tmp_path):
    """test()/validation run net_g without its wrappers when there is no EMA copy."""
    from realsr.runtime.checkpoint import unwrap
    from realsr.models import build_model
    opt = {
        'name': 'bare', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}, 'path': {},
        'datasets': {'train': {'batch_size_per_gpu': 2}},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'pixel_opt': {'type': 'L1Loss'}, 'total_iter': 1},
    }
    model = build_model(opt)
    model.net_g = torch.nn.DataParallel(model.net_g)  # stands for DDP / compile wrappers
    assert model.inference_net() is unwrap(model.net_g) and model.inference_net() is not model.net_g


def _paired_gan(net_d_init_iters):
    from realsr.models import build_model
    torch.manual_seed(0)
    return build_model({
        'name': 'gan', 'model_type': 'RealESRGANModel', 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'high_order_degradation': False,  # paired data: no degradation pipeline needed here
        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4},
        'network_d': {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 4}, 'path': {},
        'datasets': {'train': {'batch_size_per_gpu': 2}},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'optim_d': {'type': 'Adam', 'lr': 1e-4},
                  'pixel_opt': {'type': 'L1Loss'}, 'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla'},
                  'net_d_init_iters': net_d_init_iters, 'total_iter': 2}})


def test_discriminator_only_iterations_keep_no_generator_graph():
    """During net_d_init_iters only D trains on net_g's output: that output must not hold net_g's
    graph into the next forward (it doubled peak activation memory)."""
    model = _paired_gan(net_d_init_iters=1)
    data = {'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 32, 32)}
    model.feed_data(data)
    model.optimize_parameters(1)  # D only
    assert model.output.grad_fn is None and not model.output.requires_grad
    assert 'l_g_pix' not in model.log_dict and 'l_d_real' in model.log_dict
    model.feed_data(data)
    model.optimize_parameters(2)  # G and D
    assert 'l_g_pix' in model.log_dict


def test_validation_batches_do_not_sharpen_and_keep_the_gt():
    """feed_data outside the on-the-fly training path makes no sharpened GT (validation used to make
    and keep one per image); a paired training step still makes it when a loss needs it."""
    model = _paired_gan(net_d_init_iters=0)
    model.feed_data({'lq': torch.rand(1, 3, 9, 7), 'gt': torch.rand(1, 3, 36, 28)})
    assert model.gt_usm is None
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 32, 32)})
    model.optimize_parameters(1)
    assert model.gt_usm is not None and model.gt_usm.shape == model.gt.shape
