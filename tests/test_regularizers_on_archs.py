"""One regularizer, any arch: the same option entries attach to SRResNet, RRDBNet, SwinIR, DRCT,
SRVGGNetCompact and HAT wherever the named site exists, act in training mode only, and fail clearly elsewhere."""
import pytest
import torch

from realsr.archs import build_network
from realsr.regularizers import build_regularizers

ARCHS = {
    'MSRResNet': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4},
    'RRDBNet': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 8},
    'SwinIR': {'type': 'SwinIR', 'upscale': 2, 'img_size': 16, 'window_size': 4, 'embed_dim': 12, 'depths': [2],
               'num_heads': [2], 'mlp_ratio': 2, 'upsampler': 'pixelshuffle', 'img_range': 1.0,
               'drop_path_rate': 0.0},  # no stochastic depth: train-mode outputs are comparable
    'DRCT': {'type': 'DRCT', 'upscale': 2, 'img_size': 16, 'window_size': 8, 'embed_dim': 12, 'depths': [2],
             'num_heads': [2], 'gc': 6, 'mlp_ratio': 2, 'upsampler': 'pixelshuffle', 'img_range': 1.0,
             'drop_path_rate': 0.0},
    'SRVGGNetCompact': {'type': 'SRVGGNetCompact', 'num_feat': 8, 'num_conv': 2, 'upscale': 4, 'act_type': 'prelu'},
    'HAT': {'type': 'HAT', 'upscale': 2, 'img_size': 16, 'window_size': 8, 'embed_dim': 12, 'depths': [2],
            'num_heads': [2], 'compress_ratio': 3, 'squeeze_factor': 6, 'mlp_ratio': 2, 'upsampler': 'pixelshuffle',
            'drop_path_rate': 0.0},
}
# SRVGGNetCompact has no conv_last/conv_first: its last conv is body.{2 num_conv + 2} (the regularizers act on
# that conv's input, as on conv_last's elsewhere) and its first conv body.0.
LAST_CONV = {'SRVGGNetCompact': 'body.6'}
FIRST_CONV = {'SRVGGNetCompact': 'body.0'}
REGULARIZERS = {
    'ChannelDropout': [{'type': 'ChannelDropout', 'p': 0.7, 'sites': ['conv_last:input']}],
    'ChannelDropout-element': [{'type': 'ChannelDropout', 'p': 0.5, 'mode': 'element', 'sites': ['conv_last:input']}],
    'AdaptiveDropout': [{'type': 'AdaptiveDropout', 'sites': ['conv_last:input'], 'step': 10}],
    'FeatureAlignment': [{'type': 'FeatureAlignment', 'weight': 1.0, 'sites': ['conv_last:input']}],
    'CrossDropout': [{'type': 'CrossDropout', 'p_col': 0.2, 'p_row': 0.01, 'sites': ['conv_last:input']}],
}


@pytest.mark.parametrize('arch', list(ARCHS))
@pytest.mark.parametrize('reg', list(REGULARIZERS))
def test_regularizer_attaches_to_every_arch(arch, reg):
    torch.manual_seed(0)
    plain = build_network(ARCHS[arch])
    torch.manual_seed(0)
    net = build_network(ARCHS[arch])
    last = LAST_CONV.get(arch, 'conv_last')
    regs = build_regularizers([{**entry, 'sites': [f'{last}:input']} for entry in REGULARIZERS[reg]], net)
    assert regs[0].attached and regs[0].attached[0][1] == last
    x = torch.rand(4, 3, 16, 16)
    net.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(net(x), plain(x))  # eval: exactly the plain arch
    net.train()
    for r in regs:
        r.set_iteration(1)
    out = net(x)
    extra = sum(v for r in regs for v in r.losses().values())
    if reg.startswith('FeatureAlignment'):
        assert torch.equal(out, plain.train()(x))  # it only observes the features
        assert torch.is_tensor(extra)
    else:
        assert not torch.allclose(out, plain.train()(x))  # dropout acts in training mode
    (out.mean() + (extra if torch.is_tensor(extra) else 0)).backward()
    assert net.get_submodule(FIRST_CONV.get(arch, 'conv_first')).weight.grad is not None


def test_missing_site_lists_close_modules():
    net = build_network(ARCHS['SwinIR'])
    with pytest.raises(ValueError, match='matches no module of SwinIR') as exc:
        build_regularizers([{'type': 'ChannelDropout', 'sites': ['conv_hr:input']}], net)
    assert 'conv_last' in str(exc.value) or 'conv_first' in str(exc.value)
