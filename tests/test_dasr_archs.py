"""DASR / CDDNet archs: oracle parity (seeded init and forward outputs), expert-mixing
equivalence with MSRResNet, initialisation from a MSRResNet checkpoint, the uninitialised
error and full-size parameter counts."""
import json

import numpy as np
import pytest
import torch

from realsr.archs.dasr_arch import (LKAT, Degradation_Predictor, Dynamic_conv2d, MSRResNetDynamic,
                                    MSRResNetDynamicCDDNet, MSRResNetDynamicDASR)
from realsr.archs.srresnet_arch import MSRResNet
from realsr.registry import ARCH_REGISTRY

# oracle entry -> how this project builds it
ORACLE = {
    'dasr_degradation_predictor': lambda kw: Degradation_Predictor(**kw),
    'dasr_msrresnetdynamic_x4': lambda kw: MSRResNetDynamic(**kw, with_rc=False),
    'cddnet_msrresnetdynamic_x4': lambda kw: MSRResNetDynamic(**kw),  # with_rc=True by default
}


@pytest.fixture(scope='module')
def manifest(oracle_dir):
    return json.loads((oracle_dir / 'archs' / 'manifest.json').read_text())


def _load(oracle_dir, filename):
    return torch.load(oracle_dir / 'archs' / filename, weights_only=True)


def _npz(oracle_dir, entry):
    data = np.load(oracle_dir / 'archs' / entry['npz'])
    return {k: torch.from_numpy(data[k]) for k in data.files}


def test_registry_names():
    for name in ('MSRResNetDynamic', 'MSRResNetDynamicDASR', 'MSRResNetDynamicCDDNet', 'Degradation_Predictor'):
        assert ARCH_REGISTRY.get(name) is not None
    small = dict(num_feat=8, num_block=1)
    assert hasattr(ARCH_REGISTRY.get('MSRResNetDynamic')(**small), 'RC')  # CDDNet option files' default
    assert not hasattr(ARCH_REGISTRY.get('MSRResNetDynamic')(**small, with_rc=False), 'RC')
    assert not hasattr(MSRResNetDynamicDASR(**small), 'RC')
    assert hasattr(MSRResNetDynamicCDDNet(**small), 'RC')


@pytest.mark.parametrize('name', list(ORACLE))
def test_oracle_init_parity(oracle_dir, manifest, name):
    entry = manifest[name]
    torch.manual_seed(0)
    model = ORACLE[name](entry['kwargs'])
    if isinstance(model, MSRResNetDynamic):
        model.init_dynamic_weights()
    ref = _load(oracle_dir, entry['state_dict'])
    own = model.state_dict()
    assert sorted(own) == sorted(ref)
    assert len(own) == entry['state_dict_entries']
    assert sum(p.numel() for p in model.parameters()) == entry['num_parameters']
    for key, value in ref.items():
        assert own[key].shape == value.shape, key
        assert torch.equal(own[key], value), key


@pytest.mark.parametrize('suffix', ['', '_randomized'])
@pytest.mark.parametrize('name', list(ORACLE))
def test_oracle_output_parity(oracle_dir, manifest, name, suffix):
    entry = manifest[name]
    model = ORACLE[name](entry['kwargs'])
    key = 'state_dict_randomized' if suffix else 'state_dict'
    model.load_state_dict(_load(oracle_dir, entry[key]), strict=True)
    model.eval()
    data = _npz(oracle_dir, entry)
    with torch.no_grad():
        if isinstance(model, Degradation_Predictor):
            out_params, weights = model(data['input'])
            torch.testing.assert_close(out_params, data['out_params' + suffix], atol=1e-5, rtol=0)
            torch.testing.assert_close(weights, data['weights' + suffix], atol=1e-5, rtol=0)
        else:
            for wk in ('pred', 'fixed'):
                out = model(data['input'], data[f'weights_{wk}'])
                torch.testing.assert_close(out, data[f'output_{wk}{suffix}'], atol=1e-5, rtol=0)


def test_weights_pred_is_predictor_output(oracle_dir, manifest):
    """The generators' ``weights_pred`` is the predictor's raw output on the same input."""
    entry = manifest['dasr_degradation_predictor']
    model = Degradation_Predictor(**entry['kwargs'])
    model.load_state_dict(_load(oracle_dir, entry['state_dict']))
    data = _npz(oracle_dir, entry)
    with torch.no_grad():
        _, weights = model.eval()(data['input'])
    gen = _npz(oracle_dir, manifest['dasr_msrresnetdynamic_x4'])
    torch.testing.assert_close(weights, gen['weights_pred'], atol=1e-6, rtol=0)


def test_dynamic_conv_matches_per_sample_conv():
    torch.manual_seed(0)
    conv = Dynamic_conv2d(4, 6, 3, K=3)
    conv.init_parameters()
    x = torch.randn(3, 4, 7, 5)
    w = torch.randn(3, 3)
    out = conv(x, w)
    for b in range(3):
        kern = torch.einsum('k,koihw->oihw', w[b], conv.weight)
        bias = w[b] @ conv.bias
        ref = torch.nn.functional.conv2d(x[b:b + 1], kern, bias, padding=1)
        torch.testing.assert_close(out[b:b + 1], ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match='weights must have shape'):
        conv(x, torch.randn(2, 3))


def _msrresnet_sd(num_feat, num_block, upscale, seed=3):
    torch.manual_seed(seed)
    net = MSRResNet(num_feat=num_feat, num_block=num_block, upscale=upscale)
    with torch.no_grad():  # non-trivial biases too
        for name, p in net.named_parameters():
            if name.endswith('bias'):
                p.normal_(0, 0.05)
    return net


@pytest.mark.parametrize('upscale', [4, 2])
@pytest.mark.parametrize('with_rc', [False, True])
def test_expert_mixing_equivalence(upscale, with_rc):
    """K identical experts copied from one MSRResNet + weights summing to one = that MSRResNet."""
    ref = _msrresnet_sd(num_feat=8, num_block=2, upscale=upscale).eval()
    dyn = MSRResNetDynamic.from_msrresnet(ref.state_dict(), num_feat=8, num_block=2, upscale=upscale,
                                          num_models=5, with_rc=with_rc).eval()
    assert dyn.dynamic_initialized
    for _, m in dyn.dynamic_convs():
        for k in range(1, 5):
            assert torch.equal(m.weight[k], m.weight[0])
    if with_rc:  # the reference gets the same (ordinary) RC block in front of its conv_last
        ref.conv_last.register_forward_pre_hook(lambda module, args: (dyn.RC(args[0]),))
    torch.manual_seed(7)
    x = torch.rand(3, 3, 10, 9)
    weights_uniform = torch.full((3, 5), 0.2)
    raw = torch.randn(3, 5)
    weights_varied = raw - raw.mean(1, keepdim=True) + 0.2  # different per sample, each sums to 1
    assert not torch.allclose(weights_varied[0], weights_varied[1])
    with torch.no_grad():
        expected = ref(x)
        for w in (weights_uniform, weights_varied, torch.eye(5)[[0, 3, 4]]):
            torch.testing.assert_close(dyn(x, w), expected, atol=1e-5, rtol=0)


def test_from_msrresnet_cddnet_keeps_rc_and_loads_rc_keys():
    ref = _msrresnet_sd(num_feat=8, num_block=1, upscale=4)
    torch.manual_seed(0)
    dyn = MSRResNetDynamic(num_feat=8, num_block=1)
    rc_before = {k: v.clone() for k, v in dyn.state_dict().items() if k.startswith('RC.')}
    missing, unexpected = dyn.load_msrresnet_state_dict(ref.state_dict())
    assert sorted(missing) == sorted(rc_before) and unexpected == []
    for k, v in rc_before.items():
        assert torch.equal(dyn.state_dict()[k], v)
    sd = ref.state_dict()
    assert dyn.conv_first.weight.shape == (5, 8, 3, 3, 3)
    torch.testing.assert_close(dyn.conv_first.weight[2], sd['conv_first.weight'])
    torch.testing.assert_close(dyn.body[0].conv2.bias[4], sd['body.0.conv2.bias'])


def test_from_msrresnet_errors_name_keys():
    ref = _msrresnet_sd(num_feat=8, num_block=2, upscale=4).state_dict()
    with pytest.raises(ValueError, match=r"conv_first\.weight"):
        MSRResNetDynamic.from_msrresnet(ref, num_feat=16, num_block=2)  # num_feat mismatch
    with pytest.raises(ValueError, match=r"body\.2\.conv1\.weight"):
        MSRResNetDynamic.from_msrresnet(ref, num_feat=8, num_block=3)  # missing block
    with pytest.raises(ValueError, match=r"body\.1\.conv1\.weight"):
        MSRResNetDynamic.from_msrresnet(ref, num_feat=8, num_block=1)  # unexpected keys
    # a plain MSRResNet dict given to load_state_dict points to the right method
    dyn = MSRResNetDynamic(num_feat=8, num_block=2)
    with pytest.raises(ValueError, match='load_msrresnet_state_dict'):
        dyn.load_state_dict(ref)


def test_uninitialised_error_and_flag():
    x, w = torch.rand(1, 3, 6, 6), torch.full((1, 5), 0.2)
    dyn = MSRResNetDynamic(num_feat=8, num_block=1, with_rc=False)
    assert not dyn.dynamic_initialized
    with pytest.raises(RuntimeError, match='never initialised'):
        dyn(x, w)
    # a partial (non-strict) load that lacks dynamic weights does not count
    partial = {k: v for k, v in dyn.state_dict().items() if not k.startswith('conv_last')}
    dyn.load_state_dict(partial, strict=False)
    assert not dyn.dynamic_initialized
    # a full state dict does
    src = MSRResNetDynamic(num_feat=8, num_block=1, with_rc=False, init_dynamic=True)
    assert src.dynamic_initialized
    dyn.load_state_dict(src.state_dict())
    assert dyn.dynamic_initialized
    assert dyn(x, w).shape == (1, 3, 24, 24)
    # copies (e.g. the EMA generator) carry the flag
    import copy
    assert copy.deepcopy(dyn).dynamic_initialized


def test_lkat_shapes_and_no_residual():
    torch.manual_seed(0)
    block = LKAT(8)
    x = torch.randn(2, 8, 11, 13)
    y = block(x)
    assert y.shape == x.shape
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv1.bias.zero_()
    assert torch.count_nonzero(block(x)) == 0  # nothing bypasses conv1


def test_predictor_any_size_and_batch():
    model = Degradation_Predictor(in_nc=3, nf=8, num_params=33, num_networks=5).eval()
    with torch.no_grad():
        p, w = model(torch.rand(3, 3, 17, 23))
    assert p.shape == (3, 33) and w.shape == (3, 5)


def test_param_counts(oracle_dir):
    counts = json.loads((oracle_dir / 'archs' / 'param_counts.json').read_text())

    def n(model):
        return sum(p.numel() for p in model.parameters())

    full = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_models=5, upscale=4)
    assert n(MSRResNetDynamic(**full, num_block=16, with_rc=False)) == 7_587_855
    assert n(MSRResNetDynamic(**full, num_block=16)) == 7_608_783
    assert n(MSRResNetDynamic(**full, num_block=50)) == 20_164_303
    assert n(Degradation_Predictor(in_nc=3, nf=64, num_params=33, num_networks=5)) == 468_143
    assert counts['DASR_MSRResNetDynamic_x4_b16']['parameters'] == 7_587_855
    assert counts['CDDNet_MSRResNetDynamic_x4_b16']['parameters'] == 7_608_783
    assert counts['CDDNet_MSRResNetDynamic_x4_b50']['parameters'] == 20_164_303
    assert counts['Degradation_Predictor']['parameters'] == 468_143


def test_cddnet_layout_carries_cross_dropout_and_dasr_layout_does_not():
    from realsr.archs.dasr_arch import MSRResNetDynamic, MSRResNetDynamicCDDNet, MSRResNetDynamicDASR
    kw = dict(num_feat=8, num_block=1, init_dynamic=True)
    assert [type(r).__name__ for r in MSRResNetDynamic(**kw).regularizers] == ['CrossDropout']
    assert [type(r).__name__ for r in MSRResNetDynamicCDDNet(**kw).regularizers] == ['CrossDropout']
    assert not hasattr(MSRResNetDynamicDASR(**kw), 'regularizers')
    assert not hasattr(MSRResNetDynamic(with_rc=False, **kw), 'regularizers')
    assert not hasattr(MSRResNetDynamic(cross_dropout=False, **kw), 'regularizers')
    net = MSRResNetDynamic(**kw)
    lq, w = torch.rand(2, 3, 8, 8), torch.full((2, 5), 0.2)
    with torch.no_grad():
        assert not torch.equal(net(lq, w), net(lq, w))  # training mode: stripes dropped
        plain = MSRResNetDynamic(cross_dropout=False, **kw)
        plain.load_state_dict(net.state_dict())
        net.eval(), plain.eval()
        assert torch.equal(net(lq, w), plain(lq, w))  # eval mode: the identity
