"""DRCT tests: spandrel 0.4.2 as an independent implementation (random weights), checkpoint layout
(keys, buffers), SDPA against the explicit softmax path, full-size parameter counts, the model
types' test-time padding conventions, and DRCT's own option files run on CPU with a tiny network."""
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from conftest import write_pair_folders
from realsr.archs.drct_arch import DRCT, RDG
from realsr.archs.swinir_arch import SwinTransformerBlock
from realsr.models.drct_model import (DRCTModel, RealDRCTGANModel, RealDRCTMSEModel, flip_pad_to_next_multiple,
                                      reflect_pad_to_multiple)
from realsr.models.realesrgan_model import RealESRGANModel, RealESRNetModel
from realsr.models.sr_model import SRModel
from realsr.registry import ARCH_REGISTRY, MODEL_REGISTRY
from test_archs import _import_spandrel  # torchvision stub for importing spandrel on CPU-only torch

REPO = Path(__file__).resolve().parents[1]
from test_swinir import _randomize_, _run


@pytest.fixture(scope='module')
def spandrel():
    return _import_spandrel()


TINY = dict(upscale=4, img_size=32, window_size=8, embed_dim=48, depths=[2, 2], num_heads=[4, 4], gc=16,
            mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')
CONFIGS = {
    'tiny_x4': TINY,
    # 12/18/24/30/36 channels, 6 heads each; identity residual, x3, three groups
    'identity_x3': dict(upscale=3, img_size=16, window_size=4, embed_dim=12, depths=[6, 6, 6], num_heads=[6, 6, 6],
                        gc=6, mlp_ratio=2, upsampler='pixelshuffle', resi_connection='identity'),
    # 20 + k*8 channels with 4 heads: heads 4, 4, 4, 4, 4; x2
    'gc8_x2': dict(upscale=2, img_size=16, window_size=8, embed_dim=20, depths=[6], num_heads=[4], gc=8,
                   mlp_ratio=1.5, upsampler='pixelshuffle', resi_connection='1conv'),
    # 16 + k*2 channels with 4 heads: heads 4, 2, 4, 2, 4 (dim mod num_heads is subtracted)
    'uneven_heads_x4': dict(upscale=4, img_size=16, window_size=8, embed_dim=16, depths=[2], num_heads=[4], gc=2,
                            mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv'),
}


# -- spandrel 0.4.2 ------------------------------------------------------------------------------
@pytest.mark.parametrize('config', list(CONFIGS))
def test_matches_spandrel(spandrel, config):
    kwargs = CONFIGS[config]
    ours = _randomize_(DRCT(**kwargs), seed=len(config))
    descriptor = spandrel.ModelLoader().load_from_state_dict(ours.state_dict())
    assert type(descriptor.model).__name__ == 'DRCT'
    assert descriptor.scale == kwargs['upscale']
    gen = torch.Generator().manual_seed(3)
    # spandrel requires multiples of 16: the construction size (stored masks) where possible, and another
    for h, w in ((max(kwargs['img_size'], 16), ) * 2, (16, 48)):
        x = torch.rand(2, 3, h, w, generator=gen)
        out, ref = _run(ours, x), _run(descriptor.model, x)
        assert out.shape == ref.shape == (2, 3, h * kwargs['upscale'], w * kwargs['upscale'])
        assert (out - ref).abs().max().item() <= 1e-5, (config, h, w)


def test_seeded_init_and_key_order_match_spandrel(spandrel):
    # spandrel's DRCT is a port of upstream with the same module creation order and timm's
    # inverse-CDF trunc_normal_: the same seed must give the same state dict, key for key.
    from spandrel.architectures.DRCT import DRCT as SpandrelDRCT
    torch.manual_seed(0)
    ours = DRCT(**TINY).state_dict()
    torch.manual_seed(0)
    ref = SpandrelDRCT(**TINY).state_dict()
    assert list(ours) == list(ref)
    for key in ref:
        assert ours[key].dtype == ref[key].dtype and torch.equal(ours[key], ref[key]), key


def test_no_upsampler_returns_input_like_spandrel(spandrel):
    kwargs = {**TINY, 'upsampler': '', 'upscale': 1}
    ours = _randomize_(DRCT(**kwargs), seed=2)
    assert not any(k.startswith(('conv_last', 'upsample', 'conv_before_upsample')) for k in ours.state_dict())
    descriptor = spandrel.ModelLoader().load_from_state_dict(ours.state_dict())
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(_run(ours, x), _run(descriptor.model, x))
    torch.testing.assert_close(_run(ours, x), x)


def test_reflect_pad_mode_matches_padded_spandrel(spandrel):
    ours = _randomize_(DRCT(**TINY, pad_mode='reflect'), seed=9)
    descriptor = spandrel.ModelLoader().load_from_state_dict(ours.state_dict())
    x = torch.rand(1, 3, 19, 21)
    ref = _run(descriptor.model, torch.nn.functional.pad(x, (0, 3, 0, 5), 'reflect'))[..., :76, :84]
    out = _run(ours, x)
    assert out.shape == (1, 3, 76, 84)
    assert (out - ref).abs().max().item() <= 1e-5


# -- layout --------------------------------------------------------------------------------------
def test_state_dict_layout_and_buffers():
    model = DRCT(**TINY)
    sd = model.state_dict()
    assert list(sd)[:4] == ['conv_first.weight', 'conv_first.bias', 'patch_embed.norm.weight', 'patch_embed.norm.bias']
    layer0 = [k[len('layers.0.'):] for k in sd if k.startswith('layers.0.')]
    tops = []
    for k in layer0:
        if k.split('.')[0] not in tops:
            tops.append(k.split('.')[0])
    assert tops == ['swin1', 'adjust1', 'swin2', 'adjust2', 'swin3', 'adjust3', 'swin4', 'adjust4', 'swin5',
                    'adjust5']
    assert [k for k in sd if k.endswith('attn_mask')] == [f'layers.{i}.swin{k}.attn_mask' for i in (0, 1)
                                                          for k in (2, 4)]
    assert sd['layers.0.swin2.attn_mask'].shape == (16, 64, 64)
    assert sd['layers.0.swin1.attn.relative_position_index'].dtype == torch.int64
    assert sd['layers.0.swin1.attn.relative_position_bias_table'].shape == (225, 4)
    # channels 48, 64, 80, 96, 112; MLP ratio 2, 2, 2, 1, 1
    assert [sd[f'layers.0.swin{k}.mlp.fc1.weight'].shape[0] for k in range(1, 6)] == [96, 128, 160, 96, 112]
    assert [sd[f'layers.0.adjust{k}.weight'].shape[:2] for k in range(1, 6)] == [(16, 48), (16, 64), (16, 80),
                                                                                (16, 96), (48, 112)]
    assert [k for k in sd if not k.startswith(('layers.', 'conv_first', 'patch_embed'))] == [
        'norm.weight', 'norm.bias', 'conv_after_body.weight', 'conv_after_body.bias', 'conv_before_upsample.0.weight',
        'conv_before_upsample.0.bias', 'upsample.0.weight', 'upsample.0.bias', 'upsample.2.weight', 'upsample.2.bias',
        'conv_last.weight', 'conv_last.bias']
    assert 'mean' not in sd
    leaky = model.conv_before_upsample[1]
    assert isinstance(leaky, torch.nn.LeakyReLU) and leaky.negative_slope == 0.01


def test_heads_rule_and_window_rule():
    rdg = DRCT(**CONFIGS['uneven_heads_x4']).layers[0]
    assert isinstance(rdg, RDG)
    assert [getattr(rdg, f'swin{k}').num_heads for k in range(1, 6)] == [4, 2, 4, 2, 4]
    assert [getattr(rdg, f'swin{k}').shift_size for k in range(1, 6)] == [0, 4, 0, 4, 0]
    # img_size <= window: one window, no shift, no attn_mask keys (as upstream)
    model = DRCT(**{**TINY, 'img_size': 8})
    assert not any(k.endswith('attn_mask') for k in model.state_dict())
    assert {m.shift_size for m in model.modules() if isinstance(m, SwinTransformerBlock)} == {0}


def test_full_size_upstream_default_config_strict_roundtrip():
    torch.manual_seed(0)
    a, b = DRCT(**TINY), DRCT(**TINY)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 24)
    torch.testing.assert_close(_run(a, x), _run(b, x), atol=0, rtol=0)


# -- SDPA against the explicit path --------------------------------------------------------------
def test_sdpa_equals_explicit_whole_model():
    model = _randomize_(DRCT(**TINY), seed=11)
    gen = torch.Generator().manual_seed(12)
    for size in ((32, 32), (16, 40)):  # stored masks, cached masks
        x = torch.rand(2, 3, *size, generator=gen)
        ref = _run(model.set_attn_impl('explicit'), x)
        out = _run(model.set_attn_impl('sdpa'), x)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_train_step_with_checkpointing_reaches_all_blocks():
    model = DRCT(**{**TINY, 'use_checkpoint': True, 'drop_path_rate': 0.2}).train()
    model(torch.rand(2, 3, 16, 16)).mean().backward()
    for k in range(1, 6):
        assert getattr(model.layers[1], f'swin{k}').attn.relative_position_bias_table.grad is not None


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs, match', [
    (dict(upsampler='pixelshuffledirect'), 'upsampler'),
    (dict(resi_connection='3conv'), 'resi_connection'),
    (dict(attn_impl='flash3'), 'attn_impl'),
    (dict(pad_mode='zeros'), 'pad_mode'),
    (dict(embed_dim=10, num_heads=[4, 4]), 'not divisible'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DRCT(**{**TINY, **kwargs})


def test_indivisible_input_rejected():
    with pytest.raises(ValueError, match=r'19x21 .*window size 8'):
        _run(DRCT(**TINY), torch.rand(1, 3, 19, 21))


# -- full-size parameter counts (built, never run) ----------------------------------------------
@pytest.mark.parametrize('key, expected', [('DRCT_x4', 14_139_579), ('DRCT-L_x4', 27_580_719)])
def test_full_size_parameter_counts(key, expected, oracle_dir):
    entry = json.loads((oracle_dir / 'archs' / 'param_counts.json').read_text())[key]
    model = ARCH_REGISTRY.get('DRCT')(**entry['kwargs'])
    assert sum(p.numel() for p in model.parameters()) == entry['parameters'] == expected
    assert len(model.state_dict()) == entry['state_dict_entries']
    assert sum(b.numel() for n, b in model.named_buffers() if n != 'mean') == entry['buffer_elements']  # persistent


# -- model types and test-time padding -----------------------------------------------------------
def test_model_types_registered():
    assert issubclass(MODEL_REGISTRY.get('DRCTModel'), SRModel) and MODEL_REGISTRY.get('DRCTModel') is DRCTModel
    assert issubclass(MODEL_REGISTRY.get('RealDRCTMSEModel'), RealESRNetModel)
    assert issubclass(MODEL_REGISTRY.get('RealDRCTGANModel'), RealESRGANModel)
    assert RealDRCTMSEModel is MODEL_REGISTRY.get('RealDRCTMSEModel')
    assert RealDRCTGANModel is MODEL_REGISTRY.get('RealDRCTGANModel')


def test_pad_helpers():
    x = torch.arange(5.).view(1, 1, 5, 1).expand(1, 1, 5, 3)
    y, ph, pw = flip_pad_to_next_multiple(x, 4)
    assert (ph, pw) == (3, 1) and y.shape == (1, 1, 8, 4)
    assert y[0, 0, :, 0].tolist() == [0, 1, 2, 3, 4, 4, 3, 2]  # mirrored including the edge row
    y, ph, pw = flip_pad_to_next_multiple(torch.rand(1, 1, 8, 8), 4)
    assert (ph, pw) == (4, 4)  # always pads, even when divisible
    y, ph, pw = reflect_pad_to_multiple(x, 4)
    assert (ph, pw) == (3, 1) and y[0, 0, :, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    assert reflect_pad_to_multiple(torch.rand(1, 1, 8, 8), 4)[1:] == (0, 0)


def _bare_model(net, lq, **opt):
    model = DRCTModel.__new__(DRCTModel)
    model.net_g, model.net_g_ema, model.lq, model.opt = net, None, lq, {'network_g': {}, **opt}
    model.device = torch.device('cpu')
    return model


@pytest.mark.parametrize('pad_mode', ['reflect', 'flip'])
def test_drct_model_test_pads_and_crops(pad_mode):
    net = _randomize_(DRCT(**TINY), seed=4).eval()
    lq = torch.rand(1, 3, 19, 21)
    model = _bare_model(net, lq, val={'pad_mode': pad_mode})
    model.test()
    pad = flip_pad_to_next_multiple if pad_mode == 'flip' else reflect_pad_to_multiple
    ref = _run(net, pad(lq, 8)[0])[..., :76, :84]
    assert model.output.shape == (1, 3, 76, 84)
    torch.testing.assert_close(model.output, ref, atol=0, rtol=0)
    # tiling: one tile covering the image equals the untiled result; small tiles run at any size
    model.opt['tile'] = {'tile_size': 64, 'tile_pad': 4}
    model.test()
    torch.testing.assert_close(model.output, ref, atol=1e-6, rtol=0)
    model.opt['tile'] = {'tile_size': 10, 'tile_pad': 3}
    model.test()
    assert model.output.shape == (1, 3, 76, 84) and torch.isfinite(model.output).all()
    assert not net.training


def test_drct_model_tiles_with_local_network():
    # a purely local network: tiling with any tile size gives exactly the untiled output
    class Nearest(torch.nn.Module):
        def size_multiple(self):
            return 8

        def forward(self, x):
            assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0
            return torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest')

    lq = torch.rand(1, 3, 19, 21)
    model = _bare_model(Nearest(), lq, tile={'tile_size': 7, 'tile_pad': 2})
    model.test()
    torch.testing.assert_close(model.output, torch.nn.functional.interpolate(lq, scale_factor=2, mode='nearest'))
    with pytest.raises(ValueError, match='pad_mode'):
        _bare_model(Nearest(), lq, val={'pad_mode': 'zeros'}).test()


# -- DRCT's own option files on CPU --------------------------------------------------------------
SHRINK = dict(img_size=16, window_size=8, embed_dim=12, depths=[1, 1], num_heads=[6, 6], gc=6)


def _drct_seed(seed_options_dir, name):
    return yaml.safe_load((seed_options_dir / 'drct' / name).read_text())


@pytest.fixture(scope='module')
def drct_data(tmp_path_factory):
    return write_pair_folders(tmp_path_factory.mktemp('drct') / 'data', n_train=4, n_val=1, hr_size=48)


def test_drct_train_from_scratch_and_test_files_run_on_cpu(tmp_path, seed_options_dir, drct_data, monkeypatch):
    from realsr import test as test_entry
    from realsr import train
    opt = _drct_seed(seed_options_dir, 'train_DRCT_SRx4_from_scratch.yml')
    assert opt['model_type'] == 'DRCTModel' and opt['network_g']['type'] == 'DRCT'
    opt.update(name='drct_scratch', num_gpu=0)
    opt['datasets']['train'].update(dataroot_gt=drct_data['train_gt'], dataroot_lq=drct_data['train_lq'], gt_size=32,
                                    num_worker_per_gpu=0, batch_size_per_gpu=2)
    for key in ('val_1', 'val_2'):
        opt['datasets'][key].update(dataroot_gt=drct_data['val_gt'], dataroot_lq=drct_data['val_lq'])
    opt['network_g'].update(SHRINK)
    opt['train']['total_iter'] = 2
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    (tmp_path / 'train.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', str(tmp_path / 'train.yml')])
    assert type(model) is DRCTModel
    ckpt = tmp_path / 'experiments' / 'drct_scratch' / 'models' / 'net_g_2.pth'
    assert set(torch.load(ckpt, weights_only=True)) >= {'params', 'params_ema'}

    # the upstream test file, strict, params_ema; val LQ 12x12 is padded to the window (16) and cropped
    test_opt = _drct_seed(seed_options_dir, 'test_DRCT_SRx4.yml')
    assert test_opt['path']['param_key_g'] == 'params_ema' and test_opt['path']['strict_load_g'] is True
    test_opt.update(name='drct_test', num_gpu=0)
    test_opt['datasets']['test_1'].update(dataroot_gt=drct_data['val_gt'], dataroot_lq=drct_data['val_lq'])
    test_opt['network_g'].update(SHRINK)
    test_opt['path']['pretrain_network_g'] = str(ckpt)
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(test_opt))
    (res, ) = test_entry.main(['-opt', str(tmp_path / 'test.yml')])
    assert res['dataset'] == 'Set5' and res['average']['psnr'] == res['average']['psnr']  # finite, not NaN


def test_real_drct_mse_file_runs_on_cpu(tmp_path, seed_options_dir, drct_data, monkeypatch):
    from realsr import train
    opt = _drct_seed(seed_options_dir, 'train_Real_DRCT_SRx4_mse_model.yml')
    assert opt['model_type'] == 'RealDRCTMSEModel' and opt['datasets']['train']['type'] == 'RealESRGANDataset'
    opt.update(name='real_drct', num_gpu=0, gt_size=32, queue_size=4)
    meta = tmp_path / 'meta_info_DFOsub_GT.txt'  # the file's own key, meta_info_file, with a new path
    meta.write_text(''.join(f'{n}\n' for n in sorted(os.listdir(drct_data['train_gt']))[:3]))
    opt['datasets']['train'].update(dataroot_gt=drct_data['train_gt'], meta_info_file=str(meta), num_worker_per_gpu=0,
                                    batch_size_per_gpu=2, crop_pad_size=80)
    opt['network_g'].update(SHRINK)
    opt['train']['total_iter'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', str(tmp_path / 'o.yml')])
    assert type(model) is RealDRCTMSEModel
    assert model.lq.shape == (2, 3, 8, 8) and model.gt.shape == (2, 3, 32, 32)
    assert (tmp_path / 'experiments' / 'real_drct' / 'models' / 'net_g_2.pth').is_file()
    from realsr.data import build_dataset
    assert len(build_dataset(model.opt['datasets']['train'])) == 3  # the meta_info_file lists the images


def test_real_drct_gan_recipe_runs_on_cpu(tmp_path, drct_data, random_vgg19, monkeypatch):
    """Our Real-DRCT GAN-stage recipe (DRCT ships no file for it), shrunk, with random VGG19
    weights in torchvision's layout (nothing is downloaded in tests)."""
    from realsr import train
    opt = yaml.safe_load((REPO / 'options' / 'train' / 'train_Real_DRCT_GAN_x4.yml').read_text())
    assert opt['model_type'] == 'RealDRCTGANModel' and opt['network_d']['type'] == 'UNetDiscriminatorSN'
    opt.update(name='real_drct_gan', num_gpu=0, gt_size=32, queue_size=4)
    opt['datasets']['train'].update(dataroot_gt=drct_data['train_gt'], meta_info=None, num_worker_per_gpu=0,
                                    batch_size_per_gpu=2, crop_pad_size=80)
    opt['network_g'].update(SHRINK)
    opt['network_d']['num_feat'] = 8
    opt['train']['total_iter'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', str(tmp_path / 'o.yml')])
    assert type(model) is RealDRCTGANModel
    assert {'l_g_pix', 'l_g_percep', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(model.log_dict)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in model.log_dict.values())
    models = tmp_path / 'experiments' / 'real_drct_gan' / 'models'
    assert (models / 'net_g_2.pth').is_file() and (models / 'net_d_2.pth').is_file()
