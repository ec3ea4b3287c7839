"""SwinIR tests: BasicSR 1.4.2 oracle (seeded init, strict loading, outputs incl. a size other than
img_size), spandrel 0.4.2 as an independent implementation, SDPA against the explicit softmax
path, the per-size mask cache, checkpoint layout and full-size parameter counts."""
import json

import numpy as np
import pytest
import torch

from realsr.archs.swinir_arch import (SwinIR, SwinTransformerBlock, WindowAttention, relative_position_index,
                                      shift_attention_mask, trunc_normal_)
from realsr.registry import ARCH_REGISTRY
from test_archs import _import_spandrel  # torchvision stub for importing spandrel on CPU-only torch

ORACLE_NAMES = ['swinir_x2_pixelshuffle', 'swinir_x4_nearestconv']


@pytest.fixture(scope='module')
def manifest(oracle_dir):
    return json.loads((oracle_dir / 'archs' / 'manifest.json').read_text())


@pytest.fixture(scope='module')
def spandrel():
    return _import_spandrel()


def _load_sd(oracle_dir, filename):
    return torch.load(oracle_dir / 'archs' / filename, weights_only=True)


@torch.no_grad()
def _run(model, x):
    return model.eval()(x)


def _randomize_(model, seed):
    """Redraw parameters at a scale where every layer matters (the oracle's rule, own generator)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if 'relative_position_bias_table' in name:
                p.copy_(noise * 0.5)
            elif p.ndim >= 2:
                p.copy_(noise * p[0].numel()**-0.5)
            elif 'norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(noise * 0.05)
    return model


def _shifted_blocks(model):
    return [m for m in model.modules() if isinstance(m, SwinTransformerBlock) and m.shift_size > 0]


# -- BasicSR oracle ------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ORACLE_NAMES)
def test_seeded_init_matches_oracle(name, manifest, oracle_dir):
    entry = manifest[name]
    torch.manual_seed(0)
    sd = ARCH_REGISTRY.get(entry['class_name'])(**entry['kwargs']).state_dict()
    ref = _load_sd(oracle_dir, entry['state_dict'])
    assert list(sd) == list(ref)  # same keys, same order (buffers included)
    for key in ref:
        assert sd[key].dtype == ref[key].dtype and sd[key].shape == ref[key].shape, key
        if ref[key].is_floating_point():
            # Same draws in the same order, but trunc_normal_'s erfinv and the uniform kernels are vectorised
            # per CPU (AVX2, AVX-512, AMX hosts differ by a few float32 ulps). A different init scheme or draw
            # order changes the values by ~100%, so a few ulps of relative tolerance still catches it.
            torch.testing.assert_close(sd[key], ref[key], rtol=1e-5, atol=1e-8,
                                       msg=f'{key} differs from the seeded BasicSR init')
        else:
            assert torch.equal(sd[key], ref[key]), f'{key} differs from the seeded BasicSR init'
    assert len(ref) == entry['state_dict_entries']


@pytest.mark.parametrize('impl', ['sdpa', 'explicit'])
@pytest.mark.parametrize('variant', ['', '_randomized'])
@pytest.mark.parametrize('name', ORACLE_NAMES)
def test_forward_matches_oracle(name, variant, impl, manifest, oracle_dir):
    entry = manifest[name]
    model = SwinIR(**entry['kwargs'], attn_impl=impl)
    model.load_state_dict(_load_sd(oracle_dir, f'{name}{variant}.pth'), strict=True)
    assert sum(p.numel() for p in model.parameters()) == entry['num_parameters']
    data = np.load(oracle_dir / 'archs' / entry['npz'])
    for inp, out_key in (('input', 'output'), ('input_12x20', 'output_12x20')):  # 12x20: mask recomputed
        out = _run(model, torch.from_numpy(data[inp]))
        ref = torch.from_numpy(data[f'{out_key}{variant}'])
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


# -- spandrel 0.4.2 ------------------------------------------------------------------------------
SPANDREL_CONFIGS = {
    'classical_x2': dict(upscale=2, img_size=32, window_size=8, embed_dim=24, depths=[2, 2], num_heads=[2, 2],
                         mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv'),
    'classical_x3': dict(upscale=3, img_size=16, window_size=4, embed_dim=16, depths=[2], num_heads=[4],
                         mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv'),
    'lightweight_x4': dict(upscale=4, img_size=16, window_size=4, embed_dim=12, depths=[2, 2, 2],
                           num_heads=[3, 3, 3], mlp_ratio=2, upsampler='pixelshuffledirect',
                           resi_connection='1conv'),
    'realsr_3conv_x4': dict(upscale=4, img_size=16, window_size=8, embed_dim=32, depths=[2, 2], num_heads=[4, 4],
                            mlp_ratio=2, upsampler='nearest+conv', resi_connection='3conv'),
    'denoise': dict(upscale=1, img_size=16, window_size=4, embed_dim=16, depths=[2], num_heads=[2], mlp_ratio=2,
                    upsampler='', resi_connection='1conv'),
}


@pytest.mark.parametrize('config', list(SPANDREL_CONFIGS))
def test_matches_spandrel(spandrel, config):
    kwargs = SPANDREL_CONFIGS[config]
    ours = _randomize_(SwinIR(**kwargs), seed=len(config))
    descriptor = spandrel.ModelLoader().load_from_state_dict(ours.state_dict())
    assert type(descriptor.model).__name__ == 'SwinIR'
    assert descriptor.scale == kwargs['upscale']
    ws = kwargs['window_size']
    gen = torch.Generator().manual_seed(3)
    for h, w in ((kwargs['img_size'], kwargs['img_size']), (2 * ws, 3 * ws)):  # construction size and another
        x = torch.rand(2, 3, h, w, generator=gen)
        out, ref = _run(ours, x), _run(descriptor.model, x)
        assert out.shape == ref.shape == (2, 3, h * kwargs['upscale'], w * kwargs['upscale'])
        assert (out - ref).abs().max().item() <= 1e-5, (config, h, w)


def test_reflect_padding_matches_spandrel(spandrel):
    # spandrel's forward reflect-pads to a window multiple and crops, like the official SwinIR.
    ours = _randomize_(SwinIR(**SPANDREL_CONFIGS['classical_x2'], pad_mode='reflect'), seed=5)
    descriptor = spandrel.ModelLoader().load_from_state_dict(ours.state_dict())
    x = torch.rand(1, 3, 19, 21, generator=torch.Generator().manual_seed(4))
    out, ref = _run(ours, x), _run(descriptor.model, x)
    assert out.shape == (1, 3, 38, 42)
    assert (out - ref).abs().max().item() <= 1e-5


# -- SDPA against the explicit softmax path ------------------------------------------------------
def test_sdpa_equals_explicit_whole_model():
    model = _randomize_(SwinIR(**SPANDREL_CONFIGS['classical_x2']), seed=11)
    gen = torch.Generator().manual_seed(12)
    for size in ((32, 32), (16, 40)):  # construction size (stored masks) and another (cached masks)
        x = torch.rand(2, 3, *size, generator=gen)
        ref = _run(model.set_attn_impl('explicit'), x)
        out = _run(model.set_attn_impl('sdpa'), x)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('size', [(16, 16), (8, 24)])
def test_sdpa_equals_explicit_shifted_block(size):
    torch.manual_seed(0)
    block = SwinTransformerBlock(dim=16, input_resolution=(16, 16), num_heads=2, window_size=4, shift_size=2)
    assert block.attn_mask is not None and block.attn_mask.shape == (16, 16, 16)
    _randomize_(block, seed=1)
    x = torch.randn(3, size[0] * size[1], 16, requires_grad=True)
    outs, grads = {}, {}
    for impl in ('explicit', 'sdpa'):
        block.attn.attn_impl = impl
        out = block(x, size)
        out.square().sum().backward()
        outs[impl], grads[impl] = out.detach(), x.grad.clone()
        x.grad = None
    torch.testing.assert_close(outs['sdpa'], outs['explicit'], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads['sdpa'], grads['explicit'], atol=1e-4, rtol=1e-5)


def test_window_attention_mask_and_bias_are_used():
    torch.manual_seed(0)
    attn = _randomize_(WindowAttention(8, (4, 4), 2), seed=2).eval()
    mask = shift_attention_mask(8, 12, 4, 2)  # 6 windows
    x = torch.randn(2 * mask.shape[0], 16, 8)
    with torch.no_grad():
        res = {impl: (setattr(attn, 'attn_impl', impl), attn(x, mask))[1] for impl in ('explicit', 'sdpa')}
        no_mask = attn(x)
    torch.testing.assert_close(res['sdpa'], res['explicit'], atol=1e-5, rtol=0)
    assert (no_mask - res['sdpa']).abs().max() > 1e-2  # the mask changes the result
    attn.attn_impl = 'bogus'
    with pytest.raises(ValueError, match='attn_impl'):
        attn(x, mask)


# -- masks: construction rule, buffer layout, cache ----------------------------------------------
def test_mask_cache_per_size():
    model = _randomize_(SwinIR(**SPANDREL_CONFIGS['classical_x2']), seed=13)
    shifted = _shifted_blocks(model)
    assert len(shifted) == 2
    cache = shifted[0].mask_cache  # one cache per model, shared by its shifted blocks
    assert all(blk.mask_cache is cache for blk in shifted)
    _run(model, torch.rand(1, 3, 32, 32))  # construction size: the stored buffers, nothing computed
    assert len(cache) == 0
    _run(model, torch.rand(1, 3, 16, 24))
    assert cache.keys() == [(16, 24, 8, 4, torch.device('cpu'))]  # one mask for all shifted blocks
    (mask, ) = cache.tensors()
    _run(model, torch.rand(2, 3, 16, 24))  # same size again: no rebuild, same tensor
    assert cache.tensors()[0] is mask
    assert mask.dtype == torch.bool and torch.equal(mask, shift_attention_mask(16, 24, 8, 4) != 0)
    assert not any('mask_cache' in k for k in model.state_dict())


def test_construction_window_rule_and_buffers():
    # img_size <= window: one window per map, no shift, no attn_mask buffer, smaller bias table.
    model = SwinIR(img_size=6, window_size=8, embed_dim=8, depths=[2], num_heads=[2], upscale=2,
                   upsampler='pixelshuffle')
    blocks = list(model.layers[0].residual_group.blocks)
    assert [(b.window_size, b.shift_size) for b in blocks] == [(6, 0), (6, 0)]
    sd = model.state_dict()
    assert not any(k.endswith('attn_mask') for k in sd)
    assert sd['layers.0.residual_group.blocks.0.attn.relative_position_bias_table'].shape == (121, 2)
    assert model.size_multiple() == 6
    assert _run(model, torch.rand(1, 3, 12, 6)).shape == (1, 3, 24, 12)
    # img_size > window: attn_mask in odd blocks only, for the construction size; mean not saved.
    model = SwinIR(img_size=16, window_size=4, embed_dim=8, depths=[3], num_heads=[2])
    sd = model.state_dict()
    assert [k for k in sd if k.endswith('attn_mask')] == ['layers.0.residual_group.blocks.1.attn_mask']
    assert sd['layers.0.residual_group.blocks.1.attn_mask'].shape == (16, 16, 16)
    assert sd['layers.0.residual_group.blocks.0.attn.relative_position_index'].dtype == torch.int64
    assert 'mean' not in sd and not any(k.startswith('mean') for k in sd)


def test_relative_position_index_and_mask_values():
    idx = relative_position_index((2, 2))
    # tokens (0,0),(0,1),(1,0),(1,1); offset (dr, dc) -> (dr + 1) * 3 + (dc + 1)
    assert idx.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    mask = shift_attention_mask(4, 4, 2, 1)  # 4 windows of 2x2
    assert mask.shape == (4, 4, 4)
    assert torch.count_nonzero(mask[0]) == 0  # top-left window lies in one region
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    # bottom-right window: 4 regions, each token only sees itself
    assert torch.equal(mask[3] == 0, torch.eye(4, dtype=torch.bool))


def test_trunc_normal_inverse_cdf():
    torch.manual_seed(0)
    t = trunc_normal_(torch.empty(10000), std=0.5, a=-0.5, b=0.5)
    assert t.min() >= -0.5 and t.max() <= 0.5
    torch.manual_seed(0)
    u = torch.empty(10000).uniform_(2 * 0.15865525393145707 - 1, 2 * 0.8413447460685429 - 1)
    torch.testing.assert_close(t, (u.erfinv() * 0.5 * 2**0.5).clamp(-0.5, 0.5))


# -- sizes, padding, errors ----------------------------------------------------------------------
def test_indivisible_input_rejected_or_padded():
    kwargs = SPANDREL_CONFIGS['classical_x2']
    model = SwinIR(**kwargs)
    with pytest.raises(ValueError, match=r'19x21 .*window size 8'):
        _run(model, torch.rand(1, 3, 19, 21))
    padded = SwinIR(**kwargs, pad_mode='reflect')
    padded.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 16, 24)  # divisible: padding changes nothing
    torch.testing.assert_close(_run(padded, x), _run(model, x), atol=0, rtol=0)
    assert _run(padded, torch.rand(1, 3, 19, 21)).shape == (1, 3, 38, 42)


@pytest.mark.parametrize('kwargs, match', [
    (dict(upsampler='nearest+conv', upscale=2), 'upscale 4'),
    (dict(upsampler='bicubic'), 'upsampler'),
    (dict(resi_connection='2conv'), 'resi_connection'),
    (dict(attn_impl='flash3'), 'attn_impl'),
    (dict(pad_mode='zeros'), 'pad_mode'),
])
def test_bad_arguments(kwargs, match):
    base = dict(img_size=8, window_size=4, embed_dim=8, depths=[1], num_heads=[2])
    with pytest.raises(ValueError, match=match):
        SwinIR(**{**base, **kwargs})


def test_checkpointing_and_ape_train_step():
    model = SwinIR(img_size=8, window_size=4, embed_dim=8, depths=[2], num_heads=[2], upscale=2,
                   upsampler='pixelshuffle', ape=True, use_checkpoint=True).train()
    assert 'absolute_pos_embed' in model.state_dict()
    model(torch.rand(2, 3, 8, 8)).mean().backward()
    assert model.absolute_pos_embed.grad is not None
    assert model.layers[0].residual_group.blocks[1].attn.relative_position_bias_table.grad is not None


# -- full-size parameter counts (built, never run) ----------------------------------------------
@pytest.mark.parametrize('key, expected', [('SwinIR-M_x4_classical', 11_900_199), ('SwinIR-M_x4_realSR', 11_715_559)])
def test_full_size_parameter_counts(key, expected, oracle_dir):
    entry = json.loads((oracle_dir / 'archs' / 'param_counts.json').read_text())[key]
    model = SwinIR(**entry['kwargs'])
    assert sum(p.numel() for p in model.parameters()) == entry['parameters'] == expected
    assert len(model.state_dict()) == entry['state_dict_entries']
    assert sum(b.numel() for n, b in model.named_buffers() if n != 'mean') == entry['buffer_elements']  # persistent


def test_spec_parameter_counts_without_oracle():
    m = dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8, mlp_ratio=2, img_size=64)
    assert sum(p.numel() for p in SwinIR(upscale=4, upsampler='pixelshuffle', **m).parameters()) == 11_900_199
    s = dict(embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, window_size=8, mlp_ratio=2, img_size=64)
    assert sum(p.numel() for p in SwinIR(upscale=4, upsampler='pixelshuffledirect', **s).parameters()) == 929_628


def test_registry_lists_swinir():
    assert ARCH_REGISTRY.get('SwinIR') is SwinIR


def test_bf16_autocast_runs_both_paths():
    model = _randomize_(SwinIR(**SPANDREL_CONFIGS['classical_x2']), seed=21)
    x = torch.rand(1, 3, 16, 24)
    outs = {}
    with torch.autocast('cpu', dtype=torch.bfloat16):
        for impl in ('sdpa', 'explicit'):
            outs[impl] = _run(model.set_attn_impl(impl), x).float()
    ref = _run(model.set_attn_impl('explicit'), x)
    for out in outs.values():
        assert out.shape == ref.shape and torch.isfinite(out).all()
        assert (out - ref).abs().mean() < 0.1 * ref.abs().mean()


def test_bench_archs_script_runs(capsys):
    """scripts/bench_archs.py runs and prints both attention paths and their ratio (tiny CPU run)."""
    import importlib.util

    from conftest import REPO_ROOT
    spec = importlib.util.spec_from_file_location('bench_archs', REPO_ROOT / 'scripts' / 'bench_archs.py')
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.ARCHS['SwinIR-M'] = dict(bench.ARCHS['SwinIR-M'], embed_dim=12, depths=[2], num_heads=[2], img_size=16)
    bench.main(['--archs', 'SRResNet', 'SwinIR-M', '--batch', '1', '--size', '16', '--iters', '1', '--device', 'cpu'])
    out = capsys.readouterr().out
    assert 'SwinIR-M   fp32  sdpa' in out and 'explicit/sdpa' in out and 'SRResNet' in out


def test_swinirmodel_pads_to_the_window_at_test_time():
    """BasicSR's SwinIRModel name: an input that is not a window multiple is reflect-padded,
    run and cropped (the arch itself refuses such sizes)."""
    import torch.nn.functional as F

    from realsr.registry import MODEL_REGISTRY
    opt = {'num_gpu': 0, 'is_train': False, 'scale': 2, 'name': 't',
           'network_g': {'type': 'SwinIR', 'upscale': 2, 'img_size': 16, 'window_size': 4, 'embed_dim': 12,
                         'depths': [2], 'num_heads': [2], 'mlp_ratio': 2, 'upsampler': 'pixelshuffle',
                         'img_range': 1.0}}
    torch.manual_seed(0)
    model = MODEL_REGISTRY.get('SwinIRModel')(opt)
    lq = torch.rand(1, 3, 13, 18)
    model.feed_data({'lq': lq})
    model.test()
    model.net_g.eval()  # test() runs the net in eval mode (no stochastic depth)
    with torch.no_grad():
        expected = model.net_g(F.pad(lq, (0, 2, 0, 3), mode='reflect'))[..., :26, :36]
    assert model.output.shape == (1, 3, 26, 36)
    assert torch.allclose(model.output, expected, atol=1e-6)
