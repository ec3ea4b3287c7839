"""GAN building blocks: UNetDiscriminatorSN / VGGStyleDiscriminator, the torchvision-free VGG
feature extractor, PerceptualLoss and GANLoss.

The VGG weights are a fake "torchvision" file (random tensors under torchvision's vgg19 key names
and shapes), so no download and no real weight file is needed.
"""
import math
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from realsr.archs import vgg_arch
from realsr.archs.discriminator_arch import UNetDiscriminatorSN, VGGStyleDiscriminator
from realsr.archs.vgg_arch import VGGFeatureExtractor, torchvision_keys, vgg_layer_names
from realsr.losses import build_loss
from realsr.losses.gan_loss import GANLoss, MultiScaleGANLoss
from realsr.losses.perceptual_loss import PerceptualLoss
from realsr.registry import ARCH_REGISTRY, LOSS_REGISTRY

# --------------------------------------------------------------------------------------------
# helpers: fake torchvision weight files
# --------------------------------------------------------------------------------------------
# Conv widths of torchvision's configurations ('M' = max-pool), written out here independently
# of realsr's table.
TV_CFG = {
    'vgg11': [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    'vgg16': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
    'vgg19': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
}


def fake_torchvision_state(vgg_type='vgg19', seed=0, random_upto=None):
    """A state dict shaped like torchvision's ``vgg*(weights=IMAGENET1K_V1).state_dict()``.

    Convs/BNs with features index <= random_upto (all when None) get random values (He-scaled
    so activations stay O(1)); the rest, and the classifier, are zero-stride expanded views of
    one element, so the saved file stays small.
    """
    gen = torch.Generator().manual_seed(seed)
    bn = vgg_type.endswith('_bn')
    state, idx, c_in = {}, 0, 3

    def tensor(shape, scale):
        if random_upto is None or idx <= random_upto:
            return torch.randn(shape, generator=gen) * scale
        return torch.zeros(1).expand(*shape)

    for v in TV_CFG[vgg_type.replace('_bn', '')]:
        if v == 'M':
            idx += 1
            continue
        state[f'features.{idx}.weight'] = tensor((v, c_in, 3, 3), math.sqrt(2 / (9 * c_in)))
        state[f'features.{idx}.bias'] = tensor((v, ), 0.01)
        idx += 1
        if bn:
            state[f'features.{idx}.weight'] = 1 + tensor((v, ), 0.1)
            state[f'features.{idx}.bias'] = tensor((v, ), 0.1)
            state[f'features.{idx}.running_mean'] = tensor((v, ), 0.1)
            state[f'features.{idx}.running_var'] = 1 + tensor((v, ), 0.1).abs()
            state[f'features.{idx}.num_batches_tracked'] = torch.tensor(0)
            idx += 1
        idx += 1  # ReLU
        c_in = v
    for name, shape in (('0', (4096, 512 * 7 * 7)), ('3', (4096, 4096)), ('6', (1000, 4096))):
        state[f'classifier.{name}.weight'] = torch.zeros(1).expand(*shape)
        state[f'classifier.{name}.bias'] = torch.zeros(1).expand(shape[0])
    return state


@pytest.fixture(scope='module')
def vgg19_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('vgg') / 'vgg19-dcbb9e9d.pth'
    torch.save(fake_torchvision_state('vgg19'), path)
    return path


@pytest.fixture(scope='module')
def vgg19_state(vgg19_file):
    return torch.load(vgg19_file, weights_only=True)


@pytest.fixture()
def no_weights_anywhere(tmp_path, monkeypatch):
    """No VGG file can be found: env var unset, empty cwd/HOME/torch hub dir."""
    monkeypatch.delenv('REALSR_VGG_WEIGHTS', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    hub = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(hub))
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    return {'work': work, 'hub': hub}


# --------------------------------------------------------------------------------------------
# UNetDiscriminatorSN
# --------------------------------------------------------------------------------------------
def expected_unet_keys(num_in_ch=3, num_feat=64):
    """Key -> shape of the official UNetDiscriminatorSN, from its layer definitions:
    conv0 3x3 (bias, no SN); conv1-3 4x4 s2 SN no bias (f->2f->4f->8f); conv4-6 3x3 SN no bias
    (8f->4f->2f->f); conv7-8 3x3 SN no bias (f->f); conv9 3x3 (bias, no SN, f->1).
    Spectral norm (hook API) stores weight_orig (param), then weight_u (out,) and
    weight_v (in*k*k,) buffers."""
    f = num_feat
    keys = {'conv0.weight': (f, num_in_ch, 3, 3), 'conv0.bias': (f, )}
    sn = [(f, 2 * f, 4), (2 * f, 4 * f, 4), (4 * f, 8 * f, 4), (8 * f, 4 * f, 3), (4 * f, 2 * f, 3), (2 * f, f, 3),
          (f, f, 3), (f, f, 3)]
    for i, (c_in, c_out, k) in enumerate(sn, start=1):
        keys[f'conv{i}.weight_orig'] = (c_out, c_in, k, k)
        keys[f'conv{i}.weight_u'] = (c_out, )
        keys[f'conv{i}.weight_v'] = (c_in * k * k, )
    keys['conv9.weight'] = (1, f, 3, 3)
    keys['conv9.bias'] = (1, )
    return keys


def test_unet_state_dict_keys_match_official():
    net = UNetDiscriminatorSN(3, num_feat=64, skip_connection=True)
    sd = net.state_dict()
    expected = expected_unet_keys(3, 64)
    assert list(sd) == list(expected)  # names and order
    assert len(sd) == 28
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    # an official-style checkpoint ({'params': state_dict}) loads strictly into a fresh net
    other = UNetDiscriminatorSN(3, num_feat=64)
    other.load_state_dict({'params': sd}['params'], strict=True)


def test_unet_spectral_norm_present():
    net = UNetDiscriminatorSN(3, num_feat=16)
    buffers = dict(net.named_buffers())
    params = dict(net.named_parameters())
    for i in range(1, 9):
        assert f'conv{i}.weight_u' in buffers and f'conv{i}.weight_v' in buffers
        assert f'conv{i}.weight_orig' in params and f'conv{i}.weight' not in params
        assert getattr(net, f'conv{i}').bias is None
    for name in ('conv0', 'conv9'):
        assert f'{name}.weight' in params and f'{name}.bias' in params
        assert f'{name}.weight_u' not in buffers
    # after a few training-mode forwards (one power iteration each), the effective weight has
    # spectral norm ~1 whatever the raw weight's scale
    torch.manual_seed(0)
    with torch.no_grad():
        net.conv1.weight_orig.mul_(7.0)
        for _ in range(30):
            net(torch.rand(1, 3, 8, 8))
    w = net.conv1.weight.detach()
    sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
    assert abs(sigma.item() - 1.0) < 0.05


@pytest.mark.parametrize('size', [(64, 64), (40, 56), (24, 8)])
def test_unet_output_shape(size):
    torch.manual_seed(0)
    net = UNetDiscriminatorSN(3, num_feat=16)
    out = net(torch.rand(2, 3, *size))
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


def test_unet_without_skip_connection():
    torch.manual_seed(0)
    with_skip = UNetDiscriminatorSN(1, num_feat=16, skip_connection=True).eval()
    no_skip = UNetDiscriminatorSN(1, num_feat=16, skip_connection=False).eval()
    no_skip.load_state_dict(with_skip.state_dict())  # same keys either way
    x = torch.rand(1, 1, 32, 48)
    out = no_skip(x)
    assert out.shape == (1, 1, 32, 48)
    assert not torch.allclose(out, with_skip(x))


def test_unet_size_not_multiple_of_8_is_a_clear_error():
    net = UNetDiscriminatorSN(3, num_feat=8)
    with pytest.raises(ValueError, match='multiple of 8'):
        net(torch.rand(1, 3, 36, 64))


def test_unet_gradients_and_registry():
    assert ARCH_REGISTRY.get('UNetDiscriminatorSN') is UNetDiscriminatorSN
    net = UNetDiscriminatorSN(3, num_feat=8)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    net(x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert net.conv1.weight_orig.grad is not None


# --------------------------------------------------------------------------------------------
# VGGStyleDiscriminator
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('input_size', [128, 256])
def test_vgg_style_discriminator(input_size):
    f = 8
    net = VGGStyleDiscriminator(3, f, input_size=input_size)
    stages = 5 if input_size == 128 else 6
    widths = [f, 2 * f, 4 * f, 8 * f, 8 * f, 8 * f]
    bn = ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    expected = ['conv0_0.weight', 'conv0_0.bias', 'conv0_1.weight'] + [f'bn0_1.{k}' for k in bn]
    for i in range(1, stages):
        expected += [f'conv{i}_0.weight'] + [f'bn{i}_0.{k}' for k in bn]
        expected += [f'conv{i}_1.weight'] + [f'bn{i}_1.{k}' for k in bn]
    expected += ['linear1.weight', 'linear1.bias', 'linear2.weight', 'linear2.bias']
    sd = net.state_dict()
    assert list(sd) == expected
    assert sd[f'conv{stages - 1}_1.weight'].shape == (widths[stages - 1], widths[stages - 1], 4, 4)
    assert sd['linear1.weight'].shape == (100, 8 * f * 4 * 4)
    assert net(torch.rand(2, 3, input_size, input_size)).shape == (2, 1)
    with pytest.raises(ValueError):
        net(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError):
        VGGStyleDiscriminator(3, f, input_size=192)


# --------------------------------------------------------------------------------------------
# VGG feature extractor
# --------------------------------------------------------------------------------------------
VGG19_CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
VGG19_CONV_NAMES = ['conv1_1', 'conv1_2', 'conv2_1', 'conv2_2', 'conv3_1', 'conv3_2', 'conv3_3', 'conv3_4', 'conv4_1',
                    'conv4_2', 'conv4_3', 'conv4_4', 'conv5_1', 'conv5_2', 'conv5_3', 'conv5_4']


def test_vgg_layer_layout_matches_torchvision():
    names = vgg_layer_names('vgg19')
    assert len(names) == 37 and names[-1] == 'pool5'
    assert [names.index(n) for n in VGG19_CONV_NAMES] == VGG19_CONV_IDX
    assert [names.index(f'relu{n[4:]}') for n in VGG19_CONV_NAMES] == [i + 1 for i in VGG19_CONV_IDX]
    assert [names.index(f'pool{b}') for b in range(1, 6)] == [4, 9, 18, 27, 36]
    assert torchvision_keys('vgg19') == [f'features.{i}.{k}' for i in VGG19_CONV_IDX for k in ('weight', 'bias')]
    # the other depths (torchvision's features indices of their convs)
    conv_idx = {
        'vgg11': [0, 3, 6, 8, 11, 13, 16, 18],
        'vgg13': [0, 2, 5, 7, 10, 12, 15, 17, 20, 22],
        'vgg16': [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
        'vgg19_bn': [0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49],
    }
    for vgg_type, idx in conv_idx.items():
        names = vgg_layer_names(vgg_type)
        assert [i for i, n in enumerate(names) if n.startswith('conv')] == idx, vgg_type
    bn_names = vgg_layer_names('vgg19_bn')
    assert len(bn_names) == 53 and bn_names[:4] == ['conv1_1', 'bn1_1', 'relu1_1', 'conv1_2']
    with pytest.raises(ValueError, match='vgg19'):
        vgg_layer_names('vgg20')


def test_vgg_extractor_loads_torchvision_file(vgg19_file, vgg19_state):
    ext = VGGFeatureExtractor(['conv5_4'], pretrained_path=str(vgg19_file))
    assert list(dict(ext.vgg_net.named_children())) == vgg_layer_names('vgg19')[:35]
    assert ext.torchvision_index['conv5_4'] == 34
    assert torch.equal(ext.vgg_net.conv1_1.weight, vgg19_state['features.0.weight'])
    assert torch.equal(ext.vgg_net.conv1_1.bias, vgg19_state['features.0.bias'])
    for name, idx in zip(VGG19_CONV_NAMES, VGG19_CONV_IDX):
        assert torch.equal(getattr(ext.vgg_net, name).weight, vgg19_state[f'features.{idx}.weight']), name
    # BasicSR's key names: the normalisation buffers, then vgg_net.<layer>.*
    keys = list(ext.state_dict())
    assert keys == ['mean', 'std'] + [f'vgg_net.{n}.{k}' for n in VGG19_CONV_NAMES for k in ('weight', 'bias')]


def test_vgg_extractor_builds_only_to_deepest_layer(vgg19_file):
    ext = VGGFeatureExtractor(['relu2_1', 'conv1_2'], pretrained_path=vgg19_file)
    assert list(dict(ext.vgg_net.named_children())) == vgg_layer_names('vgg19')[:7]
    out = ext(torch.rand(1, 3, 16, 16))
    assert list(out) == ['conv1_2', 'relu2_1']  # layer order
    assert out['conv1_2'].shape == (1, 64, 16, 16) and out['relu2_1'].shape == (1, 128, 8, 8)
    assert (out['relu2_1'] >= 0).all() and (out['conv1_2'] < 0).any()  # conv = before the ReLU
    no_pool = VGGFeatureExtractor(['relu2_1'], pretrained_path=vgg19_file, remove_pooling=True)
    assert 'pool1' not in dict(no_pool.vgg_net.named_children())
    assert no_pool(torch.rand(1, 3, 16, 16))['relu2_1'].shape == (1, 128, 16, 16)
    stride1 = VGGFeatureExtractor(['relu2_1'], pretrained_path=vgg19_file, pooling_stride=1)
    assert stride1(torch.rand(1, 3, 16, 16))['relu2_1'].shape == (1, 128, 15, 15)


def test_vgg_input_normalisation(vgg19_file, vgg19_state):
    ext = VGGFeatureExtractor(['conv1_1'], pretrained_path=vgg19_file)
    assert torch.allclose(ext.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(ext.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    x = torch.rand(2, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    w, b = vgg19_state['features.0.weight'], vgg19_state['features.0.bias']
    expected = F.conv2d((x - mean) / std, w, b, padding=1)
    assert torch.allclose(ext(x)['conv1_1'], expected, atol=1e-5)
    # range_norm: [-1, 1] input is mapped to [0, 1] first
    ranged = VGGFeatureExtractor(['conv1_1'], pretrained_path=vgg19_file, range_norm=True)
    assert torch.allclose(ranged(x * 2 - 1)['conv1_1'], expected, atol=1e-5)
    # no input norm: raw input, and no buffers
    raw = VGGFeatureExtractor(['conv1_1'], pretrained_path=vgg19_file, use_input_norm=False)
    assert torch.allclose(raw(x)['conv1_1'], F.conv2d(x, w, b, padding=1), atol=1e-5)
    assert 'mean' not in dict(raw.named_buffers())


def test_vgg_frozen_by_default(vgg19_file):
    ext = VGGFeatureExtractor(['relu1_1'], pretrained_path=vgg19_file)
    assert all(not p.requires_grad for p in ext.parameters())
    assert not ext.training
    ext.train()  # an owner's .train() must not unfreeze BN statistics
    assert not ext.training and not ext.vgg_net.training
    trainable = VGGFeatureExtractor(['relu1_1'], pretrained_path=vgg19_file, requires_grad=True)
    assert all(p.requires_grad for p in trainable.parameters()) and trainable.training


def test_vgg_bn_variant(tmp_path):
    path = tmp_path / 'vgg11_bn-6002323d.pth'
    state = fake_torchvision_state('vgg11_bn', random_upto=1)
    del state['features.1.num_batches_tracked']  # old files lack it
    torch.save(state, path)
    ext = VGGFeatureExtractor(['relu1_1'], vgg_type='vgg11_bn', pretrained_path=path)
    assert list(dict(ext.vgg_net.named_children())) == ['conv1_1', 'bn1_1', 'relu1_1']
    assert torch.equal(ext.vgg_net.bn1_1.running_mean, state['features.1.running_mean'])
    assert not ext.vgg_net.bn1_1.training
    assert ext(torch.rand(1, 3, 8, 8))['relu1_1'].shape == (1, 64, 8, 8)


def test_vgg_wrong_file_or_layer_is_an_error(tmp_path, vgg19_file):
    vgg16 = tmp_path / 'vgg16.pth'
    torch.save({k: torch.zeros(1) for k in fake_torchvision_state('vgg16', random_upto=-1)}, vgg16)
    with pytest.raises(ValueError, match='not a torchvision vgg19 state dict'):
        VGGFeatureExtractor(['conv1_1'], pretrained_path=vgg16)
    with pytest.raises(ValueError, match='conv6_1'):
        VGGFeatureExtractor(['conv6_1'], pretrained_path=vgg19_file)
    with pytest.raises(ValueError, match='vgg19_bn'):
        VGGFeatureExtractor(['conv1_1'], vgg_type='vgg18', pretrained_path=vgg19_file)


def test_vgg_missing_file_message(no_weights_anywhere):
    work, hub = no_weights_anywhere['work'], no_weights_anywhere['hub']
    with pytest.raises(FileNotFoundError) as info:
        VGGFeatureExtractor(['conv5_4'])
    msg = str(info.value)
    assert 'vgg19-dcbb9e9d.pth' in msg
    assert 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth' in msg
    assert 'REALSR_VGG_WEIGHTS' in msg and 'pretrained_path' in msg
    for place in (work / 'experiments' / 'pretrained_models' / 'vgg19-dcbb9e9d.pth',
                  work / 'pretrained_models' / 'vgg19-dcbb9e9d.pth', hub / 'checkpoints' / 'vgg19-dcbb9e9d.pth'):
        assert str(place) in msg
    # other types name their own file
    with pytest.raises(FileNotFoundError, match='vgg16-397923af.pth'):
        VGGFeatureExtractor(['conv1_1'], vgg_type='vgg16')
    # an explicit path that does not exist is reported as such (no silent fallback)
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        VGGFeatureExtractor(['conv1_1'], pretrained_path=str(work / 'nowhere.pth'))
    # the env var is listed with its value when set
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('REALSR_VGG_WEIGHTS', str(work / 'env.pth'))
        with pytest.raises(FileNotFoundError, match='env.pth'):
            VGGFeatureExtractor(['conv1_1'])


def test_vgg_search_order(no_weights_anywhere, vgg19_file, monkeypatch):
    work, hub = no_weights_anywhere['work'], no_weights_anywhere['hub']
    name = 'vgg19-dcbb9e9d.pth'
    (hub / 'checkpoints').mkdir(parents=True)
    (hub / 'checkpoints' / name).symlink_to(vgg19_file)
    assert vgg_arch.find_vgg_weights('vgg19') == hub / 'checkpoints' / name
    (work / 'pretrained_models').mkdir()
    (work / 'pretrained_models' / name).symlink_to(vgg19_file)
    assert vgg_arch.find_vgg_weights('vgg19') == work / 'pretrained_models' / name
    (work / 'experiments' / 'pretrained_models').mkdir(parents=True)
    (work / 'experiments' / 'pretrained_models' / name).symlink_to(vgg19_file)
    assert vgg_arch.find_vgg_weights('vgg19') == work / 'experiments' / 'pretrained_models' / name
    env_dir = work / 'env_dir'
    env_dir.mkdir()
    (env_dir / name).symlink_to(vgg19_file)
    monkeypatch.setenv('REALSR_VGG_WEIGHTS', str(env_dir))  # a folder holding the file
    assert vgg_arch.find_vgg_weights('vgg19') == env_dir / name
    monkeypatch.setenv('REALSR_VGG_WEIGHTS', str(vgg19_file))  # the file itself
    assert vgg_arch.find_vgg_weights('vgg19') == vgg19_file
    assert vgg_arch.find_vgg_weights('vgg19', pretrained_path=env_dir / name) == env_dir / name
    ext = VGGFeatureExtractor(['conv1_1'])  # found through the env var
    assert ext.weight_path == vgg19_file


def test_no_torchvision_import():
    code = ('import sys, realsr.archs.vgg_arch, realsr.archs.discriminator_arch, realsr.losses.gan_loss, '
            'realsr.losses.perceptual_loss; assert "torchvision" not in sys.modules and "basicsr" not in sys.modules')
    subprocess.run([sys.executable, '-c', code], check=True)


# --------------------------------------------------------------------------------------------
# PerceptualLoss
# --------------------------------------------------------------------------------------------
LAYERS = {'conv1_2': 0.5, 'relu2_1': 1.0}


def _pair(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 16, 16, generator=gen), torch.rand(2, 3, 16, 16, generator=gen)


def _gram(f):
    n, c, h, w = f.shape
    return torch.einsum('nchw,ndhw->ncd', f, f) / (c * h * w)


def test_perceptual_zero_for_identical_and_positive_otherwise(vgg19_file):
    loss = PerceptualLoss(LAYERS, pretrained_path=vgg19_file, style_weight=1.0)
    x, gt = _pair()
    percep, style = loss(x, x.clone())
    assert percep.item() == 0 and style.item() == 0
    percep, style = loss(x, gt)
    assert percep.item() > 0 and style.item() > 0


@pytest.mark.parametrize('criterion', ['l1', 'l2', 'fro'])
def test_perceptual_criteria_against_hand_computation(vgg19_file, criterion):
    loss = PerceptualLoss(LAYERS, pretrained_path=vgg19_file, perceptual_weight=2.0, style_weight=3.0,
                          criterion=criterion)
    x, gt = _pair(1)
    fx, fg = loss.vgg(x), loss.vgg(gt)

    def dist(a, b):
        d = a - b
        if criterion == 'l1':
            return d.abs().sum() / d.numel()
        if criterion == 'l2':
            return (d * d).sum() / d.numel()
        return (d * d).sum().sqrt()

    want_percep = 2.0 * sum(w * dist(fx[k], fg[k]) for k, w in LAYERS.items())
    want_style = 3.0 * sum(w * dist(_gram(fx[k]), _gram(fg[k])) for k, w in LAYERS.items())
    percep, style = loss(x, gt)
    assert torch.allclose(percep, want_percep, rtol=1e-5)
    assert torch.allclose(style, want_style, rtol=1e-4)


def test_gram_matrix_by_hand():
    from realsr.losses.perceptual_loss import gram_matrix
    f = torch.arange(12, dtype=torch.float32).reshape(1, 2, 2, 3)
    a, b = f[0, 0].flatten(), f[0, 1].flatten()  # [0..5], [6..11]
    c_h_w = 2 * 2 * 3
    want = torch.tensor([[a @ a, a @ b], [b @ a, b @ b]]) / c_h_w
    assert torch.allclose(gram_matrix(f)[0], want)
    assert want[0, 0].item() == pytest.approx(55 / 12)


def test_perceptual_none_terms(vgg19_file):
    x, gt = _pair()
    percep, style = PerceptualLoss(LAYERS, pretrained_path=vgg19_file)(x, gt)  # style_weight=0 default
    assert percep is not None and style is None
    percep, style = PerceptualLoss(LAYERS, pretrained_path=vgg19_file, perceptual_weight=0, style_weight=1)(x, gt)
    assert percep is None and style is not None
    with pytest.raises(ValueError, match='criterion'):
        PerceptualLoss(LAYERS, pretrained_path=vgg19_file, criterion='l3')


def test_perceptual_gradient_reaches_input_not_vgg(vgg19_file):
    loss = PerceptualLoss(LAYERS, pretrained_path=vgg19_file, style_weight=1.0)
    x, gt = _pair()
    x.requires_grad_(True)
    gt.requires_grad_(True)
    percep, style = loss(x, gt)
    (percep + style).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert gt.grad is None  # gt features are detached
    assert all(p.grad is None and not p.requires_grad for p in loss.vgg.parameters())
    loss.train()
    assert not loss.vgg.training


def test_perceptual_built_from_options(vgg19_file):
    assert LOSS_REGISTRY.get('PerceptualLoss') is PerceptualLoss
    assert ARCH_REGISTRY.get('VGGFeatureExtractor') is VGGFeatureExtractor
    opt = {'type': 'PerceptualLoss', 'layer_weights': {'conv1_2': 0.1, 'conv2_2': 0.1}, 'vgg_type': 'vgg19',
           'use_input_norm': True, 'perceptual_weight': 1.0, 'style_weight': 0, 'range_norm': False,
           'criterion': 'l1', 'pretrained_path': str(vgg19_file)}
    loss = build_loss(opt)
    x, gt = _pair()
    assert loss(x, gt)[0].item() > 0


# --------------------------------------------------------------------------------------------
# GANLoss
# --------------------------------------------------------------------------------------------
LOGITS = [-1.0, 0.0, 2.0]


def _softplus(v):
    return math.log(1 + math.exp(v))


def _mean(vals):
    return sum(vals) / len(vals)


def _bce(x, t):  # -[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]
    s = 1 / (1 + math.exp(-x))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


HAND = {  # (gan_type, target_is_real, is_disc) -> value for LOGITS, before loss_weight
    ('vanilla', True): _mean([_softplus(-v) for v in LOGITS]),  # 0.71111...
    ('vanilla', False): _mean([_softplus(v) for v in LOGITS]),  # 1.04444...
    ('lsgan', True): (4 + 1 + 1) / 3,
    ('lsgan', False): (1 + 0 + 4) / 3,
    ('wgan', True): -1 / 3,
    ('wgan', False): 1 / 3,
    ('wgan_softplus', True): _mean([_softplus(-v) for v in LOGITS]),
    ('wgan_softplus', False): _mean([_softplus(v) for v in LOGITS]),
}


@pytest.mark.parametrize('gan_type', ['vanilla', 'lsgan', 'wgan', 'wgan_softplus'])
@pytest.mark.parametrize('real', [True, False])
def test_gan_loss_values(gan_type, real):
    x = torch.tensor(LOGITS).view(1, 1, 1, 3)
    want = HAND[(gan_type, real)]
    assert GANLoss(gan_type)(x, real, is_disc=True).item() == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert GANLoss(gan_type)(x, real, is_disc=False).item() == pytest.approx(want, rel=1e-6, abs=1e-7)
    weighted = GANLoss(gan_type, loss_weight=0.1)
    assert weighted(x, real, is_disc=False).item() == pytest.approx(0.1 * want, rel=1e-6, abs=1e-7)
    assert weighted(x, real, is_disc=True).item() == pytest.approx(want, rel=1e-6, abs=1e-7)  # D: never weighted


def test_gan_loss_hand_values_spelled_out():
    assert HAND[('vanilla', True)] == pytest.approx((1.3132617 + 0.6931472 + 0.1269280) / 3, abs=1e-6)
    assert HAND[('vanilla', False)] == pytest.approx((0.3132617 + 0.6931472 + 2.1269280) / 3, abs=1e-6)


def test_gan_loss_hinge():
    x = torch.tensor(LOGITS)
    loss = GANLoss('hinge', loss_weight=0.5)
    assert loss(x, True, is_disc=True).item() == pytest.approx((2 + 1 + 0) / 3)  # relu(1 - x)
    assert loss(x, False, is_disc=True).item() == pytest.approx((0 + 1 + 3) / 3)  # relu(1 + x)
    assert loss(x, True, is_disc=False).item() == pytest.approx(0.5 * -1 / 3)  # generator: -mean(x)
    assert loss(x, False, is_disc=False).item() == pytest.approx(0.5 * -1 / 3)


def test_gan_loss_label_values():
    x = torch.tensor(LOGITS)
    smooth = GANLoss('vanilla', real_label_val=0.9, fake_label_val=0.1)
    assert smooth(x, True).item() == pytest.approx(_mean([_bce(v, 0.9) for v in LOGITS]), rel=1e-6)
    assert smooth(x, False).item() == pytest.approx(_mean([_bce(v, 0.1) for v in LOGITS]), rel=1e-6)
    ls = GANLoss('lsgan', real_label_val=0.5)
    assert ls(x, True).item() == pytest.approx(_mean([(v - 0.5)**2 for v in LOGITS]))


def test_gan_loss_unknown_type_and_gradient():
    with pytest.raises(ValueError) as info:
        GANLoss('relativistic')
    for name in ('vanilla', 'lsgan', 'wgan', 'wgan_softplus', 'hinge'):
        assert name in str(info.value)
    x = torch.tensor(LOGITS, requires_grad=True)
    GANLoss('vanilla', loss_weight=2.0)(x, True).backward()
    # d/dx mean(softplus(-x)) * 2 = -2 * sigmoid(-x) / n
    want = [-2 * (1 / (1 + math.exp(v))) / 3 for v in LOGITS]
    assert torch.allclose(x.grad, torch.tensor(want))


def test_multiscale_gan_loss():
    assert LOSS_REGISTRY.get('GANLoss') is GANLoss
    loss = LOSS_REGISTRY.get('MultiScaleGANLoss')('lsgan', loss_weight=2.0)
    assert isinstance(loss, MultiScaleGANLoss)
    a, b = torch.tensor(LOGITS), torch.tensor([1.0, 1.0])
    single = GANLoss('lsgan', loss_weight=2.0)
    assert loss(a, True).item() == pytest.approx(single(a, True).item())
    # a list averages the scales; a nested list uses its last tensor
    want = (single(a, True) + single(b, True)) / 2
    assert loss([a, [torch.zeros(3), b]], True).item() == pytest.approx(want.item())
