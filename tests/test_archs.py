"""Arch tests: MSRResNet / MSRResNet_details / RRDBNet against the BasicSR 1.4.2 oracle in
../shared/oracle/archs (seeded init, forward outputs, parameter counts) and against spandrel."""
import importlib
import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from realsr.archs.arch_util import (ResidualBlockNoBN, Upsample, default_init_weights, make_layer,
                                    pixel_unshuffle)
from realsr.archs.rrdbnet_arch import RRDBNet
from realsr.archs.srresnet_arch import MSRResNet, MSRResNet_details
from realsr.registry import ARCH_REGISTRY

ORACLE_NAMES = ['msrresnet_x4', 'msrresnet_x2', 'rrdbnet_x4', 'rrdbnet_x2']


@pytest.fixture(scope='module')
def manifest(oracle_dir):
    return json.loads((oracle_dir / 'archs' / 'manifest.json').read_text())


def _load_sd(oracle_dir, filename):
    return torch.load(oracle_dir / 'archs' / filename, weights_only=True)


def _build(entry):
    return ARCH_REGISTRY.get(entry['class_name'])(**entry['kwargs'])


def _randomize_(model, seed):
    """Redraw every parameter at a scale where each layer matters (the oracle's rule)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            std = p[0].numel() ** -0.5 if p.ndim >= 2 else 0.05  # N(0, 1/fan_in) / biases N(0, 0.05^2)
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


@torch.no_grad()
def _run(model, x):
    return model.eval()(x)


def _to_details_keys(sd):
    """MSRResNet keys ``body.{K-1}.…`` -> MSRResNet_details keys ``body{K}.0.…``."""
    out = {}
    for key, value in sd.items():
        if key.startswith('body.'):
            idx, rest = key[len('body.'):].split('.', 1)
            key = f'body{int(idx) + 1}.0.{rest}'
        out[key] = value
    return out


# -- oracle parity -----------------------------------------------------------------------------
@pytest.mark.parametrize('name', ORACLE_NAMES)
def test_seeded_init_matches_oracle(name, manifest, oracle_dir):
    entry = manifest[name]
    torch.manual_seed(0)
    sd = _build(entry).state_dict()
    ref = _load_sd(oracle_dir, entry['state_dict'])
    assert list(sd) == list(ref)  # same keys, same order
    for key in ref:
        assert sd[key].shape == ref[key].shape, key
        assert torch.equal(sd[key], ref[key]), f'{key} differs from the seeded BasicSR init'
    assert sum(p.numel() for p in ref.values()) == entry['num_parameters']


@pytest.mark.parametrize('variant', ['', '_randomized'])
@pytest.mark.parametrize('name', ORACLE_NAMES)
def test_forward_matches_oracle(name, variant, manifest, oracle_dir):
    entry = manifest[name]
    model = _build(entry)
    model.load_state_dict(_load_sd(oracle_dir, f'{name}{variant}.pth'), strict=True)
    data = np.load(oracle_dir / 'archs' / entry['npz'])
    out = _run(model, torch.from_numpy(data['input']))
    ref = torch.from_numpy(data[f'output{variant}'])
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


# -- MSRResNet_details (Reflash Dropout / Simple-Align / Adaptive Dropout key layout) ----------
@pytest.mark.parametrize('variant', ['', '_randomized'])
def test_details_loads_remapped_msrresnet(variant, manifest, oracle_dir):
    entry = manifest['msrresnet_x4']
    model = MSRResNet_details(**entry['kwargs'])
    nb = entry['kwargs']['num_block']
    body_keys = [k for k in model.state_dict() if k.startswith('body')]
    assert body_keys == [f'body{k}.0.conv{c}.{p}' for k in range(1, nb + 1) for c in (1, 2) for p in ('weight', 'bias')]
    model.load_state_dict(_to_details_keys(_load_sd(oracle_dir, f'msrresnet_x4{variant}.pth')), strict=True)
    data = np.load(oracle_dir / 'archs' / entry['npz'])
    out = _run(model, torch.from_numpy(data['input']))
    torch.testing.assert_close(out, torch.from_numpy(data[f'output{variant}']), atol=1e-5, rtol=0)


def test_details_full_size_keys_and_init_difference():
    torch.manual_seed(0)
    plain = MSRResNet()
    torch.manual_seed(0)
    details = MSRResNet_details()
    sd_plain, sd_details = _to_details_keys(plain.state_dict()), details.state_dict()
    assert list(sd_plain) == list(sd_details)
    assert [k for k in sd_details if k.startswith('body')] == [
        f'body{k}.0.conv{c}.{p}' for k in range(1, 17) for c in (1, 2) for p in ('weight', 'bias')]
    # Same creation order, so everything drawn before the final re-init is identical...
    for key in ['conv_first.weight'] + [k for k in sd_details if k.startswith('body')]:
        assert torch.equal(sd_plain[key], sd_details[key]), key
    # ...but upstream's details variant leaves upconv1 at PyTorch's default init (uniform,
    # bound 1/sqrt(fan_in)) instead of 0.1 * kaiming-normal; the biases show it plainly.
    assert not torch.equal(sd_plain['upconv1.weight'], sd_details['upconv1.weight'])
    assert torch.count_nonzero(sd_plain['upconv1.bias']) == 0
    assert torch.count_nonzero(sd_details['upconv1.bias']) > 0
    assert sd_details['upconv1.weight'].abs().max() <= (64 * 9) ** -0.5


# -- parameter counts of the full-size models -------------------------------------------------
def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('key', ['MSRResNet_x4', 'MSRResNet_x2', 'RRDBNet_x4', 'RRDBNet_x2'])
def test_full_size_parameter_counts(key, oracle_dir):
    entry = json.loads((oracle_dir / 'archs' / 'param_counts.json').read_text())[key]
    model = ARCH_REGISTRY.get(key.split('_')[0])(**entry['kwargs'])  # built, never run
    assert _count(model) == entry['parameters']
    assert len(model.state_dict()) == entry['state_dict_entries']
    assert sum(b.numel() for b in model.buffers()) == entry['buffer_elements']


def test_full_size_msrresnet_counts_without_oracle():
    assert _count(MSRResNet(upscale=3)) == 1_554_499  # spec/archs.md section 2 (verified upstream)
    assert _count(MSRResNet_details(upscale=4)) == 1_517_571
    assert len(MSRResNet_details().state_dict()) == 74


# -- spandrel 0.4.2 as an independent RRDBNet implementation ----------------------------------
class _TorchvisionUnavailable:
    """Stands in for a torchvision name; any use raises (only spandrel's LaMa/RestoreFormer would)."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        raise RuntimeError(f'torchvision stub: {self._name}.{attr} used, but torchvision cannot be imported here')

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f'torchvision stub: {self._name}() called, but torchvision cannot be imported here')


def _import_spandrel():
    # spandrel imports torchvision at module level, but only for its LaMa and RestoreFormer archs
    # (InterpolationMode, rotate, normalize); the ESRGAN/RRDBNet code never touches it. Where the
    # installed torchvision cannot load (e.g. a CUDA torchvision wheel beside a CPU torch:
    # "operator torchvision::nms does not exist"), we stub those three names for the duration of
    # the import only, then drop the stubs so no other test can pick up a fake torchvision.
    if importlib.util.find_spec('spandrel') is None:
        pytest.skip('spandrel is not installed (test-only dependency: pip install spandrel==0.4.2)')
    try:
        return importlib.import_module('spandrel')
    except Exception as err:  # decide below whether torchvision was the cause
        first_error = err
    try:
        importlib.import_module('torchvision.transforms.functional')
    except Exception:  # torchvision is broken or absent: stub it
        pass
    else:
        pytest.skip(f'spandrel failed to import for a reason other than torchvision: {first_error!r}')
    names = ('torchvision', 'torchvision.transforms', 'torchvision.transforms.functional')
    saved = {n: sys.modules[n] for n in names if n in sys.modules}
    for n in names:
        sys.modules[n] = types.ModuleType(n)
    functional = sys.modules['torchvision.transforms.functional']
    for attr in ('InterpolationMode', 'rotate', 'normalize'):
        setattr(functional, attr, _TorchvisionUnavailable(attr))
    sys.modules['torchvision'].transforms = sys.modules['torchvision.transforms']
    sys.modules['torchvision.transforms'].functional = functional
    try:
        return importlib.import_module('spandrel')
    except Exception as err:
        pytest.skip(f'spandrel could not be imported even with torchvision stubbed: {err!r}')
    finally:
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


@pytest.fixture(scope='module')
def spandrel():
    return _import_spandrel()


@pytest.mark.parametrize('scale', [4, 2, 1])
@pytest.mark.parametrize('num_feat,num_block', [(16, 2), (32, 3)])
def test_rrdbnet_matches_spandrel(spandrel, scale, num_feat, num_block):
    ours = _randomize_(RRDBNet(3, 3, scale=scale, num_feat=num_feat, num_block=num_block, num_grow_ch=32),
                       seed=scale * 100 + num_block)
    descriptor = spandrel.ModelLoader().load_from_state_dict(ours.state_dict())
    assert descriptor.scale == scale
    x = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(7))  # divisible by 4: no padding
    out, ref = _run(ours, x), _run(descriptor.model, x)
    assert out.shape == (2, 3, 12 * scale, 16 * scale)
    assert (out - ref).abs().max().item() <= 1e-5


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize('cls', [MSRResNet, MSRResNet_details])
@pytest.mark.parametrize('upscale', [1, 8])
def test_msrresnet_rejects_unsupported_upscale(cls, upscale):
    with pytest.raises(ValueError, match=f'upscale={upscale}'):
        cls(num_feat=4, num_block=1, upscale=upscale)


@pytest.mark.parametrize('scale', [3, 8])
def test_rrdbnet_rejects_unsupported_scale(scale):
    with pytest.raises(ValueError, match=f'scale={scale}'):
        RRDBNet(3, 3, scale=scale, num_feat=4, num_block=1)


@pytest.mark.parametrize('scale,factor,size', [(2, 2, (15, 16)), (1, 4, (16, 18))])
def test_rrdbnet_rejects_indivisible_input(scale, factor, size):
    model = RRDBNet(3, 3, scale=scale, num_feat=4, num_block=1, num_grow_ch=4)
    with pytest.raises(ValueError, match=f'{size[0]}x{size[1]}.*factor {factor}'):
        model(torch.zeros(1, 3, *size))


def test_upsample_rejects_unsupported_scale():
    with pytest.raises(ValueError, match='scale 5'):
        Upsample(5, 8)


# -- shared building blocks ---------------------------------------------------------------------
def test_pixel_unshuffle_channel_order():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    s = 2
    b, c, h, w = x.shape
    expected = x.view(b, c, h // s, s, w // s, s).permute(0, 1, 3, 5, 2, 4).reshape(b, c * s * s, h // s, w // s)
    assert torch.equal(pixel_unshuffle(x, s), expected)
    with pytest.raises(ValueError, match='5x6.*factor 2'):
        pixel_unshuffle(torch.zeros(1, 1, 5, 6), 2)


def test_upsample_layout():
    assert [k for k in Upsample(4, 8).state_dict()] == ['0.weight', '0.bias', '2.weight', '2.bias']
    up3 = Upsample(3, 8)
    assert up3[0].out_channels == 72 and isinstance(up3[1], nn.PixelShuffle)
    assert Upsample(8, 2)(torch.zeros(1, 2, 3, 3)).shape == (1, 2, 24, 24)


def test_default_init_weights_and_blocks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2))
    default_init_weights(net, scale=0.5, bias_fill=0.25)
    assert torch.all(net[0].bias == 0.25) and torch.all(net[2].bias == 0.25)
    assert torch.all(net[1].weight == 1) and torch.all(net[1].bias == 0.25)
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 8, 3)
    nn.init.kaiming_normal_(ref.weight)
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3)
    default_init_weights([conv], 0.1)
    assert torch.equal(conv.weight, ref.weight * 0.1)

    layer = make_layer(ResidualBlockNoBN, 2, num_feat=4, res_scale=0.5)
    expected = [f'{i}.conv{c}.{p}' for i in range(2) for c in (1, 2) for p in ('weight', 'bias')]
    assert list(layer.state_dict()) == expected
    block = layer[0]
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(block(x), x + 0.5 * block.conv2(torch.relu(block.conv1(x))))
    assert torch.count_nonzero(ResidualBlockNoBN(4, pytorch_init=True).conv1.bias) > 0


# -- hooks (regularizers attach to named submodules) ---------------------------------------------
@pytest.mark.parametrize('cls', [MSRResNet, MSRResNet_details])
def test_hooks_see_features_entering_conv_last(cls):
    model = _randomize_(cls(num_feat=8, num_block=2, upscale=4), seed=3).eval()
    seen = {}
    model.conv_last.register_forward_pre_hook(lambda m, args: seen.__setitem__('pre', args[0].clone()))
    model.conv_hr.register_forward_hook(lambda m, args, out: seen.__setitem__('hr_ref', out))
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        out = model(x)
    assert seen['pre'].shape == (1, 8, 24, 20)
    # conv_hr's output is kept intact (the activation is not in-place) and feeds conv_last via LReLU 0.1.
    assert (seen['hr_ref'] < 0).any()
    torch.testing.assert_close(seen['pre'], nn.functional.leaky_relu(seen['hr_ref'], 0.1))
    base = nn.functional.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)
    torch.testing.assert_close(out, model.conv_last(seen['pre']) + base)


def test_registry_lists_the_archs():
    for name in ('MSRResNet', 'MSRResNet_details', 'RRDBNet'):
        assert name in ARCH_REGISTRY
