"""SRVGGNetCompact and HAT against spandrel 0.4.2 (an independent port of the reference code), their
checkpoint layouts, constructor errors, and the HAT model types.

Tolerance of the output comparisons: both sides run the same float32 operations on the same weights,
but not always the same kernels (SDPA against matmul + softmax, differently ordered reductions, the
host's BLAS), so each output value carries a rounding error of a few float32 ulps per layer, relative
to the activations' scale. The bound is 1e-5 times the largest output magnitude (about 4 on these
randomised nets); the differences measured are 1e-6 relative or less (0 for SRVGGNetCompact, whose
convolutions are literally the same calls).
"""
import pytest
import torch
from torch import nn

from realsr.archs.hat_arch import HAT, OCAB, overlap_position_index
from realsr.archs.srvgg_arch import SRVGGNetCompact
from realsr.archs.swinir_arch import relative_position_index
from realsr.models.drct_model import WindowPaddedTestMixin
from realsr.models.hat_model import HATModel, RealHATGANModel, RealHATMSEModel
from realsr.models.realesrgan_model import RealESRGANModel, RealESRNetModel
from realsr.models.sr_model import SRModel
from realsr.registry import ARCH_REGISTRY, MODEL_REGISTRY
from test_archs import _import_spandrel  # torchvision stub for importing spandrel on CPU-only torch
from test_swinir import _randomize_, _run

REL_TOL = 1e-5


@pytest.fixture(scope='module')
def spandrel():
    return _import_spandrel()


def assert_close_to(out, ref):
    assert out.shape == ref.shape
    bound = REL_TOL * max(1.0, ref.abs().max().item())
    assert (out - ref).abs().max().item() <= bound


# -- SRVGGNetCompact -----------------------------------------------------------------------------
SRVGG_CONFIGS = {
    'x4_prelu': dict(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=4, act_type='prelu'),
    'x2_relu': dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3, upscale=2, act_type='relu'),
    'x1_leakyrelu_gray': dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2, upscale=1, act_type='leakyrelu'),
}


@pytest.mark.parametrize('config', list(SRVGG_CONFIGS))
def test_srvgg_matches_spandrel(spandrel, config):
    from spandrel.architectures.Compact import Compact
    kwargs = SRVGG_CONFIGS[config]
    ref = _randomize_(Compact(**kwargs), seed=len(config))
    ours = SRVGGNetCompact(**kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(2, kwargs['num_in_ch'], 11, 13, generator=torch.Generator().manual_seed(1))  # any size
    out = _run(ours, x)
    assert out.shape == (2, kwargs['num_out_ch'], 11 * kwargs['upscale'], 13 * kwargs['upscale'])
    assert_close_to(out, _run(ref, x))


def test_srvgg_seeded_init_matches_spandrel(spandrel):
    from spandrel.architectures.Compact import Compact
    torch.manual_seed(0)
    ours = SRVGGNetCompact(**SRVGG_CONFIGS['x4_prelu']).state_dict()
    torch.manual_seed(0)
    ref = Compact(**SRVGG_CONFIGS['x4_prelu']).state_dict()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)


def test_srvgg_layout_and_regularizer_site():
    net = SRVGGNetCompact(num_feat=8, num_conv=3, upscale=4, act_type='prelu')
    convs = [k for k in net.state_dict() if k.endswith('.weight') and net.state_dict()[k].ndim == 4]
    assert convs == ['body.0.weight', 'body.2.weight', 'body.4.weight', 'body.6.weight', 'body.8.weight']
    assert net.state_dict()['body.8.weight'].shape == (3 * 16, 8, 3, 3)
    assert net.state_dict()['body.1.weight'].shape == (8, )  # PReLU: one slope per channel
    assert not any(k.startswith('body.1') for k in SRVGGNetCompact(num_conv=3, act_type='relu').state_dict())
    assert net.last_conv_site() == 'body.8:input'


@pytest.mark.parametrize('name,num_conv,expected', [('realesr-general-x4v3', 32, 1_213_296),
                                                    ('realesr-animevideov3', 16, 621_424)])
def test_srvgg_released_configs(spandrel, name, num_conv, expected):
    from spandrel.architectures.Compact import Compact
    kwargs = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=num_conv, upscale=4, act_type='prelu')
    count = sum(p.numel() for p in SRVGGNetCompact(**kwargs).parameters())
    assert count == sum(p.numel() for p in Compact(**kwargs).parameters()) == expected, name


def test_params_checkpoint_loads_like_realesr_general_x4v3(tmp_path, spandrel):
    """Real-ESRGAN's released compact models store the weights under ``params``: the inference
    tool's loader and the training loader both read that layout with strict=True."""
    from realsr.engine import inference
    from realsr.runtime.checkpoint import load_network
    from spandrel.architectures.Compact import Compact
    kwargs = dict(num_feat=16, num_conv=4, upscale=4, act_type='prelu')
    ref = _randomize_(Compact(**kwargs), seed=5)
    path = tmp_path / 'realesr-general-x4v3.pth'
    torch.save({'params': ref.state_dict()}, path)
    x = torch.rand(1, 3, 8, 8)
    net = SRVGGNetCompact(**kwargs)
    load_network(net, str(path), strict=True, param_key='params')
    assert_close_to(_run(net, x), _run(ref, x))
    built = inference.build_model({'type': 'SRVGGNetCompact', **kwargs}, str(path))  # params_ema -> params
    assert_close_to(_run(built, x), _run(ref, x))
    with pytest.raises(RuntimeError, match='missing keys'):  # a wrong num_conv is named, not silently loaded
        load_network(SRVGGNetCompact(num_feat=16, num_conv=5, upscale=4), str(path), strict=True)


@pytest.mark.parametrize('kwargs,match', [
    (dict(act_type='gelu'), "act_type='gelu'"),
    (dict(num_conv=-1), 'num_conv=-1'),
    (dict(upscale=0), 'upscale=0'),
    (dict(num_feat=2.5), 'num_feat=2.5'),
])
def test_srvgg_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SRVGGNetCompact(**kwargs)


# -- HAT -----------------------------------------------------------------------------------------
HAT_TINY = dict(upscale=4, img_size=32, window_size=8, embed_dim=24, depths=[2, 2], num_heads=[4, 4],
                compress_ratio=3, squeeze_factor=6, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2,
                upsampler='pixelshuffle', resi_connection='1conv')
HAT_CONFIGS = {
    'tiny_x4': HAT_TINY,
    # HAT-S's bottlenecks (compress_ratio 24, squeeze_factor 24: 2 channels), x2, one group of 3 heads
    'small_like_x2': dict(upscale=2, img_size=16, window_size=8, embed_dim=48, depths=[2], num_heads=[3],
                          compress_ratio=24, squeeze_factor=24, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2,
                          upsampler='pixelshuffle', resi_connection='1conv'),
    # x3, identity residual, window 4 (overlap window 6), two groups
    'identity_x3': dict(upscale=3, img_size=16, window_size=4, embed_dim=24, depths=[2, 2], num_heads=[2, 2],
                        compress_ratio=3, squeeze_factor=12, conv_scale=0.05, overlap_ratio=0.5, mlp_ratio=2,
                        upsampler='pixelshuffle', resi_connection='identity'),
}


def _spandrel_hat(kwargs):
    from spandrel.architectures.HAT import HAT as SpandrelHAT
    return SpandrelHAT(**kwargs)


@pytest.mark.parametrize('config', list(HAT_CONFIGS))
def test_hat_matches_spandrel(spandrel, config):
    kwargs = HAT_CONFIGS[config]
    ref = _randomize_(_spandrel_hat(kwargs), seed=len(config))
    ours = HAT(**kwargs, pad_mode='reflect')
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(3)
    s = kwargs['upscale']
    # a window multiple other than the construction size (HAT stores no masks: any size is equal), and a
    # size that is not one (spandrel pads it internally with reflect, as our pad_mode='reflect' does)
    for h, w in ((8, 16), (11, 13)):
        x = torch.rand(1, 3, h, w, generator=gen)
        out = _run(ours, x)
        assert out.shape == (1, 3, h * s, w * s)
        assert_close_to(out, _run(ref, x))
    # spandrel's loader recognises our state dict as HAT with our scale
    descriptor = spandrel.ModelLoader().load_from_state_dict(ours.state_dict())
    assert type(descriptor.model).__name__ == 'HAT' and descriptor.scale == s


def test_hat_seeded_init_and_buffers_match_spandrel(spandrel):
    torch.manual_seed(0)
    ours = HAT(**HAT_TINY).state_dict()
    torch.manual_seed(0)
    ref = _spandrel_hat(HAT_TINY).state_dict()
    assert set(ours) == set(ref)
    for key in ref:
        assert ours[key].dtype == ref[key].dtype and torch.equal(ours[key], ref[key]), key
    assert torch.equal(ours['relative_position_index_SA'], relative_position_index((8, 8)))
    assert ours['relative_position_index_OCA'].shape == (64, 144)  # 8² queries, 12² keys


def test_hat_layout_has_no_per_block_index_or_mask():
    sd = HAT(**HAT_TINY).state_dict()
    assert not any(k.endswith(('attn.relative_position_index', 'attn_mask')) for k in sd)
    assert 'mean' not in sd
    assert sd['layers.1.residual_group.overlap_attn.relative_position_bias_table'].shape == ((8 + 12 - 1)**2, 4)
    assert sd['layers.0.residual_group.blocks.1.conv_block.cab.3.attention.1.weight'].shape == (24 // 6, 24, 1, 1)
    assert not any(k.startswith(('upsample', 'conv_last')) for k in HAT(**{**HAT_TINY, 'upsampler': ''}).state_dict())


def test_overlap_index_formula():
    # entry (query i, key j) encodes the key's offset from the query; upstream shifts the offsets by
    # ws - ows + 1 (not ws - 1), so some entries are negative and wrap around the table: each offset
    # still gets its own row of the (ws + ows - 1)² table, and released checkpoints are trained so
    idx = overlap_position_index(2, 4)
    assert idx.shape == (4, 16) and idx.min() == -12 and idx.max() == 12
    assert len(set((idx % 25).flatten().tolist())) == 25  # 5 x 5 distinct offsets, 25 distinct rows
    assert idx[0, 0] == idx[3, 5]  # query (0,0)/key (0,0) and query (1,1)/key (1,1): same offset


HAT_TINY_X2 = {**HAT_TINY, 'upscale': 2, 'depths': [2], 'num_heads': [4]}  # faster, for behaviour tests


def test_hat_sdpa_equals_explicit_and_reflect_pad():
    net = _randomize_(HAT(**HAT_TINY_X2), seed=7)
    x = torch.rand(1, 3, 16, 24)
    ref = _run(net.set_attn_impl('explicit'), x)
    assert all(m.attn_impl == 'explicit' for m in net.modules() if isinstance(m, OCAB))
    assert_close_to(_run(net.set_attn_impl('sdpa'), x), ref)
    with pytest.raises(ValueError, match='not a multiple of the window size 8'):
        _run(net, torch.rand(1, 3, 19, 21))  # pad_mode 'none' (upstream): the model pads instead
    net.pad_mode = 'reflect'
    padded = torch.nn.functional.pad(torch.rand(1, 3, 19, 13), (0, 3, 0, 5), 'reflect')
    assert_close_to(_run(net, padded[..., :19, :13]), _run(net, padded)[..., :38, :26])


def test_hat_mask_cache_and_train_step_with_checkpointing():
    net = _randomize_(HAT(**{**HAT_TINY_X2, 'use_checkpoint': True}), seed=2)
    x = torch.rand(1, 3, 8, 8)
    _run(net, torch.rand(1, 3, 8, 16))
    _run(net, torch.rand(1, 3, 16, 8))
    assert [k[:2] for k in net.mask_cache.keys()] == [(8, 16), (16, 8)] and net.mask_caches() == [net.mask_cache]
    net.train()  # eval -> train empties the cache
    assert len(net.mask_cache) == 0
    net(x).mean().backward()
    assert all(p.grad is not None for p in net.parameters()), 'a parameter got no gradient through checkpointing'


@pytest.mark.parametrize('name,cfg,expected_millions', [
    ('HAT-S', dict(embed_dim=144, compress_ratio=24, squeeze_factor=24), 9.6),
    ('HAT', dict(embed_dim=180, compress_ratio=3, squeeze_factor=30), 20.8),
    ('HAT-L', dict(embed_dim=180, compress_ratio=3, squeeze_factor=30, groups=12), 40.8),
])
def test_hat_released_configs_parameter_counts(name, cfg, expected_millions):
    """The x4 configurations of HAT's option files have the paper's parameter counts (Table 7)."""
    cfg = dict(cfg)
    groups = cfg.pop('groups', 6)
    full = dict(upscale=4, in_chans=3, img_size=64, window_size=16, conv_scale=0.01, overlap_ratio=0.5,
                img_range=1., mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv', depths=[6] * groups,
                num_heads=[6] * groups, **cfg)
    with torch.device('meta'):  # shapes only: no memory, no init time
        count = sum(p.numel() for p in HAT(**full).parameters())
    assert round(count / 1e6, 1) == expected_millions, (name, count)


@pytest.mark.parametrize('kwargs,match', [
    (dict(upsampler='pixelshuffledirect'), "upsampler='pixelshuffledirect'"),
    (dict(resi_connection='3conv'), "resi_connection='3conv'"),
    (dict(window_size=7), 'window_size=7 with overlap_ratio=0.5'),
    (dict(img_size=4), 'img_size=4'),
    (dict(num_heads=[5, 5]), 'embed_dim=24 is not divisible by num_heads=5'),
    (dict(squeeze_factor=30), 'squeeze_factor'),
    (dict(depths=[2]), 'differ in length'),
    (dict(attn_impl='flash'), "attn_impl='flash'"),
    (dict(pad_mode='zeros'), "pad_mode='zeros'"),
])
def test_hat_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HAT(**{**HAT_TINY, **kwargs})


def test_hat_has_no_kwargs_sink():
    with pytest.raises(TypeError, match='num_feat'):  # spandrel's extra argument; upstream has none
        HAT(**HAT_TINY, num_feat=64)


# -- registry, model types, regularizer sites ----------------------------------------------------
def test_registered_archs_and_models():
    assert ARCH_REGISTRY.get('SRVGGNetCompact') is SRVGGNetCompact and ARCH_REGISTRY.get('HAT') is HAT
    assert MODEL_REGISTRY.get('HATModel') is HATModel and issubclass(HATModel, SRModel)
    assert MODEL_REGISTRY.get('RealHATMSEModel') is RealHATMSEModel and issubclass(RealHATMSEModel, RealESRNetModel)
    assert MODEL_REGISTRY.get('RealHATGANModel') is RealHATGANModel and issubclass(RealHATGANModel, RealESRGANModel)
    assert all(issubclass(m, WindowPaddedTestMixin) for m in (HATModel, RealHATMSEModel, RealHATGANModel))
    assert HAT.fp16_overflows and HAT.constant_buffers


def test_hat_model_test_pads_to_the_window_and_crops():
    """Upstream HATModel: reflect-pad the LQ to a window multiple, run, crop to scale x the input."""
    net = _randomize_(HAT(**HAT_TINY_X2), seed=4).eval()
    lq = torch.rand(1, 3, 19, 13)
    model = HATModel.__new__(HATModel)
    model.net_g, model.net_g_ema, model.lq, model.opt = net, None, lq, {'network_g': {}}
    model.device = torch.device('cpu')
    model.test()
    ref = _run(net, torch.nn.functional.pad(lq, (0, 3, 0, 5), 'reflect'))[..., :38, :26]
    assert model.output.shape == (1, 3, 38, 26)
    torch.testing.assert_close(model.output, ref, atol=0, rtol=0)  # the same computation, the same process


def test_conv_last_hook_sees_hat_reconstruction_features():
    net = HAT(**HAT_TINY_X2).eval()
    seen = {}
    net.conv_last.register_forward_pre_hook(lambda m, args: seen.setdefault('x', args[0]))
    net(torch.rand(1, 3, 8, 8))
    assert seen['x'].shape == (1, 64, 16, 16)
    assert isinstance(net.conv_before_upsample[1], nn.LeakyReLU) and net.conv_before_upsample[1].negative_slope == 0.01


# -- reduced precision and memory format -------------------------------------------------------------
PRECISION_NETS = {
    'SRVGGNetCompact': lambda: SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4, act_type='prelu'),
    'HAT': lambda: HAT(**HAT_TINY_X2),
}


@pytest.mark.parametrize('arch', list(PRECISION_NETS))
def test_channels_last_and_bf16_autocast(arch):
    """The training step's settings (realsr.runtime.train_step): channels_last in float32 computes what
    NCHW does (within float32 rounding: other conv kernels may run); bf16 autocast keeps 8 significant
    bits (2^-9 relative rounding per op), so with the default init and inputs in [0, 1] (outputs below
    1.2) the outputs stay within 0.02 of float32, 0.004 on average (measured: 0.001-0.002 and
    0.0002-0.0004, a tenth of the bounds); a backward pass gives finite gradients."""
    torch.manual_seed(0)
    net = PRECISION_NETS[arch]()
    x = torch.rand(2, 3, 8, 16, generator=torch.Generator().manual_seed(0))
    ref = _run(net, x).detach()
    net.to(memory_format=torch.channels_last)
    cl = _run(net, x.contiguous(memory_format=torch.channels_last)).detach()
    assert_close_to(cl, ref)
    with torch.autocast('cpu', dtype=torch.bfloat16):  # eval mode: no stochastic depth, comparable
        out = net(x.contiguous(memory_format=torch.channels_last))
    diff = (out.float() - ref).abs()
    assert 0 < diff.max().item() < 0.02 and diff.mean().item() < 0.004  # bf16 did run, and stays close
    out.float().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# -- option files ------------------------------------------------------------------------------------
HAT_SRX4_NETWORK = {'type': 'HAT', 'upscale': 4, 'in_chans': 3, 'img_size': 64, 'window_size': 16, 'compress_ratio': 3,
                    'squeeze_factor': 30, 'conv_scale': 0.01, 'overlap_ratio': 0.5, 'img_range': 1.,
                    'depths': [6, 6, 6, 6, 6, 6], 'embed_dim': 180, 'num_heads': [6, 6, 6, 6, 6, 6], 'mlp_ratio': 2,
                    'upsampler': 'pixelshuffle', 'resi_connection': '1conv'}  # HAT's train_HAT_SRx4 network_g


def _option_problems(opt):
    from realsr.option_schema import OptionError, validate_options
    from realsr.options import _datasets
    _datasets(opt)
    try:
        validate_options(opt, is_train=True, check_paths=False)
    except OptionError as err:
        return [str(p) for p in err.problems] if hasattr(err, 'problems') else [str(err)]
    return []


@pytest.mark.parametrize('model_type,network', [
    ('HATModel', HAT_SRX4_NETWORK),
    ('RealHATMSEModel', HAT_SRX4_NETWORK),
    ('SRModel', {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_conv': 32,
                 'upscale': 4, 'act_type': 'prelu'}),
])
def test_option_files_naming_the_new_archs_validate(model_type, network):
    from test_options import _train_opt
    opt = {**_train_opt(), 'model_type': model_type, 'scale': 4, 'network_g': dict(network)}
    assert _option_problems(opt) == []
    opt = {**_train_opt(), 'model_type': model_type, 'scale': 4, 'network_g': {**network, 'windw_size': 16}}
    assert any('windw_size' in p for p in _option_problems(opt))  # no **kwargs sink: a typo is named
