"""Which realsr arch a state dict belongs to, and with which constructor arguments.

:func:`detect_arch` reads key layouts and tensor shapes (never the values), proposes
``(type, kwargs)`` per family, and keeps a proposal only when the network built from it has
exactly the file's keys and shapes. So a detector may guess (e.g. SwinIR's ``img_size`` from the
stored shift masks) but a wrong guess never loads. What shapes cannot tell (SwinIR's
``img_range``; an activation without weights) takes the constructor's default.

:class:`ArchNotDetected` lists every family tried and why it did not match. Files of archs realsr
lacks go to spandrel (:mod:`realsr.engine.inference`), when it is installed.
"""
import math
import re

import torch

from realsr.registry import ARCH_REGISTRY
from realsr.utils.state_dict import state_dict_diff, strip_module_prefix


class ArchNotDetected(ValueError):
    """No detector recognised the state dict; ``tried`` is ``[(arch, reason), ...]``."""

    def __init__(self, tried, source=None):
        self.tried = list(tried)
        where = f' {source!r}' if source else ''
        lines = '\n'.join(f'  - {name}: {reason}' for name, reason in self.tried)
        super().__init__(f'could not detect the arch of{where}; tried:\n{lines}')


class _NoMatch(Exception):
    pass


def _need(sd, *keys):
    for key in keys:
        if key not in sd:
            raise _NoMatch(f'no {key!r}')


def _count(sd, pattern):
    """Number of distinct integers ``i`` in keys matching ``pattern`` (a regex with one group)."""
    rx = re.compile(pattern)
    found = {int(m.group(1)) for m in map(rx.match, sd) if m}
    return max(found) + 1 if found else 0


def _upscale_from_shuffle(out_ch, num_ch):
    ratio = out_ch // num_ch
    s = math.isqrt(ratio)
    if s * s != ratio or out_ch % num_ch:
        raise _NoMatch(f'{out_ch} output channels are not {num_ch} x a square')
    return s


# -- families -------------------------------------------------------------------------------------
def _msrresnet(sd):
    _need(sd, 'conv_first.weight', 'upconv1.weight', 'conv_hr.weight', 'conv_last.weight')
    if sd['conv_first.weight'].dim() != 4:
        raise _NoMatch('dynamic (5-D) convolutions: an MSRResNetDynamic')
    num_block = _count(sd, r'^body\.(\d+)\.conv1\.weight$')
    details = _count(sd, r'^body(\d+)\.0\.conv1\.weight$')
    if not num_block and not details:
        raise _NoMatch('no residual blocks body.<i>.conv1 / body<k>.0.conv1')
    num_feat, num_in_ch = sd['conv_first.weight'].shape[:2]
    upscale = 4 if 'upconv2.weight' in sd else _upscale_from_shuffle(sd['upconv1.weight'].shape[0], num_feat)
    kwargs = dict(num_in_ch=num_in_ch, num_out_ch=sd['conv_last.weight'].shape[0], num_feat=num_feat,
                  num_block=num_block or details - 1, upscale=upscale)  # body<k> counts from 1
    return ('MSRResNet' if num_block else 'MSRResNet_details'), kwargs


def _rrdbnet(sd):
    _need(sd, 'conv_first.weight', 'body.0.rdb1.conv1.weight', 'conv_up1.weight', 'conv_last.weight')
    num_feat, first_in = sd['conv_first.weight'].shape[:2]
    num_out_ch = sd['conv_last.weight'].shape[0]
    # Real-ESRGAN x2 / x1 pixel-unshuffle the input by 2 / 4 first: conv_first sees 4x / 16x the channels
    scale = {1: 4, 4: 2, 16: 1}.get(first_in // num_out_ch) if first_in % num_out_ch == 0 else None
    if scale is None:
        raise _NoMatch(f'conv_first takes {first_in} channels for {num_out_ch} output channels')
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]
    return 'RRDBNet', dict(num_in_ch=first_in // unshuffle ** 2, num_out_ch=num_out_ch, scale=scale,
                           num_feat=num_feat, num_block=_count(sd, r'^body\.(\d+)\.rdb1\.conv1\.weight$'),
                           num_grow_ch=sd['body.0.rdb1.conv1.weight'].shape[0])


def _window_of(table):
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0] or side % 2 == 0:
        raise _NoMatch(f'relative_position_bias_table of {table.shape[0]} rows is not (2 ws - 1)^2')
    return (side + 1) // 2


def _img_size(sd, mask_key, window):
    """The construction size, from a stored shift mask (nW windows of ws x ws) when there is one."""
    if mask_key is None or mask_key not in sd:
        return 64
    n_windows = sd[mask_key].shape[0]
    side = math.isqrt(n_windows)
    return side * window if side * side == n_windows else 64


def _upsampler(sd, embed_dim, num_out_ch):
    """SwinIR's / DRCT's reconstruction: ``(upsampler, upscale)``."""
    if 'conv_up1.weight' in sd:
        return 'nearest+conv', 4
    if 'conv_before_upsample.0.weight' in sd:
        num_feat = sd['conv_before_upsample.0.weight'].shape[0]
        convs = [k for k in sd if re.match(r'^upsample\.\d+\.weight$', k)]
        if len(convs) == 1 and sd[convs[0]].shape[0] == 9 * num_feat:
            return 'pixelshuffle', 3
        return 'pixelshuffle', 2 ** len(convs)
    if 'upsample.0.weight' in sd:
        return 'pixelshuffledirect', _upscale_from_shuffle(sd['upsample.0.weight'].shape[0], num_out_ch)
    return '', 1


def _window_transformer_common(sd, first_block):
    embed_dim, in_chans = sd['conv_first.weight'].shape[:2]
    table = sd[f'{first_block}.attn.relative_position_bias_table']
    window = _window_of(table)
    upsampler, upscale = _upsampler(sd, embed_dim, in_chans)
    return dict(in_chans=in_chans, embed_dim=embed_dim, window_size=window,
                mlp_ratio=sd[f'{first_block}.mlp.fc1.weight'].shape[0] / embed_dim,
                qkv_bias=f'{first_block}.attn.qkv.bias' in sd, ape='absolute_pos_embed' in sd,
                patch_norm='patch_embed.norm.weight' in sd, upscale=upscale, upsampler=upsampler,
                resi_connection='1conv' if 'conv_after_body.weight' in sd else '3conv')


def _swinir(sd):
    _need(sd, 'conv_first.weight', 'layers.0.residual_group.blocks.0.attn.relative_position_bias_table')
    if 'relative_position_index_OCA' in sd:
        raise _NoMatch("HAT's overlapping cross-attention keys")
    num_layers = _count(sd, r'^layers\.(\d+)\.residual_group\.')
    depths = [_count(sd, rf'^layers\.{i}\.residual_group\.blocks\.(\d+)\.') for i in range(num_layers)]
    heads = [sd[f'layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table'].shape[1]
             for i in range(num_layers)]
    kwargs = _window_transformer_common(sd, 'layers.0.residual_group.blocks.0')
    mask = 'layers.0.residual_group.blocks.1.attn_mask'
    kwargs.update(depths=depths, num_heads=heads, img_size=_img_size(sd, mask, kwargs['window_size']))
    return 'SwinIR', kwargs


def _hat(sd):
    _need(sd, 'conv_first.weight', 'relative_position_index_OCA', 'layers.0.residual_group.overlap_attn.qkv.weight')
    num_layers = _count(sd, r'^layers\.(\d+)\.residual_group\.')
    depths = [_count(sd, rf'^layers\.{i}\.residual_group\.blocks\.(\d+)\.') for i in range(num_layers)]
    heads = [sd[f'layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table'].shape[1]
             for i in range(num_layers)]
    kwargs = _window_transformer_common(sd, 'layers.0.residual_group.blocks.0')
    embed_dim, window = kwargs['embed_dim'], kwargs['window_size']
    cab = 'layers.0.residual_group.blocks.0.conv_block.cab'
    overlap_window = math.isqrt(sd['relative_position_index_OCA'].shape[1])
    kwargs.update(depths=depths, num_heads=heads, compress_ratio=embed_dim // sd[f'{cab}.0.weight'].shape[0],
                  squeeze_factor=embed_dim // sd[f'{cab}.3.attention.1.weight'].shape[0],
                  overlap_ratio=(overlap_window - window) / window,
                  # HAT's choices are '1conv' and 'identity' (SwinIR's third, '3conv', does not exist there)
                  resi_connection='1conv' if 'conv_after_body.weight' in sd else 'identity',
                  img_size=64)  # HAT stores no shift masks to read it from: its default
    return 'HAT', kwargs


def _drct(sd):
    _need(sd, 'conv_first.weight', 'layers.0.swin1.attn.relative_position_bias_table', 'layers.0.adjust1.weight')
    num_layers = _count(sd, r'^layers\.(\d+)\.swin1\.')
    heads = [sd[f'layers.{i}.swin1.attn.relative_position_bias_table'].shape[1] for i in range(num_layers)]
    kwargs = _window_transformer_common(sd, 'layers.0.swin1')
    kwargs.update(depths=[6] * num_layers,  # an RDG always has 5 Swin blocks: depths set only the drop-path ramp
                  num_heads=heads, gc=sd['layers.0.adjust1.weight'].shape[0],
                  img_size=_img_size(sd, 'layers.0.swin2.attn_mask', kwargs['window_size']))
    return 'DRCT', kwargs


def _msrresnet_dynamic(sd):
    _need(sd, 'conv_first.weight', 'body.0.conv1.weight', 'upconv1.weight', 'conv_last.weight')
    first = sd['conv_first.weight']
    if first.dim() != 5:
        raise _NoMatch('conv_first is not a dynamic (5-D: experts x out x in x k x k) convolution')
    num_models, num_feat, num_in_ch = first.shape[:3]
    upscale = 4 if 'upconv2.weight' in sd else _upscale_from_shuffle(sd['upconv1.weight'].shape[1], num_feat)
    with_rc = 'RC.conv1.weight' in sd
    return ('MSRResNetDynamicCDDNet' if with_rc else 'MSRResNetDynamicDASR'), dict(
        num_in_ch=num_in_ch, num_out_ch=sd['conv_last.weight'].shape[1], num_feat=num_feat,
        num_block=_count(sd, r'^body\.(\d+)\.conv1\.weight$'), num_models=num_models, upscale=upscale)


def _srvgg(sd):
    _need(sd, 'body.0.weight')
    convs = sorted(int(m.group(1)) for m in map(re.compile(r'^body\.(\d+)\.weight$').match, sd)
                   if m and sd[m.group(0)].dim() == 4)
    if len(convs) < 2 or any(k.split('.')[0] != 'body' for k in sd):
        raise _NoMatch('not a plain body.<i> stack of convolutions')
    num_feat, num_in_ch = sd['body.0.weight'].shape[:2]
    out_ch = sd[f'body.{convs[-1]}.weight'].shape[0]
    # with weights between the convs the activation is a PReLU; relu / leakyrelu hold none (Real-ESRGAN's
    # released Compact models are all PReLU; a weightless one is taken as leakyrelu, then verified by shape only)
    act = 'prelu' if 'body.1.weight' in sd else 'leakyrelu'
    upscale = None
    for num_out_ch in (num_in_ch, 3, 1):
        try:
            upscale = _upscale_from_shuffle(out_ch, num_out_ch)
            break
        except _NoMatch:
            continue
    if upscale is None:
        raise _NoMatch(f'last conv has {out_ch} channels')
    return 'SRVGGNetCompact', dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
                                   num_conv=len(convs) - 2, upscale=upscale, act_type=act)


def _degradation_predictor(sd):
    _need(sd, 'ConvNet.0.weight', 'ConvNet.10.weight', 'MappingNet.1.weight')
    nf, in_nc = sd['ConvNet.0.weight'].shape[:2]
    return 'Degradation_Predictor', {'in_nc': in_nc, 'nf': nf, 'num_params': sd['ConvNet.10.weight'].shape[0],
                                     'num_networks': sd['MappingNet.1.weight'].shape[0],
                                     'use_bias': 'ConvNet.0.bias' in sd}


DETECTORS = [
    ('MSRResNet', _msrresnet),
    ('RRDBNet', _rrdbnet),
    ('SwinIR', _swinir),
    ('DRCT', _drct),
    ('HAT', _hat),
    ('MSRResNetDynamic (DASR / CDDNet)', _msrresnet_dynamic),
    ('SRVGGNetCompact', _srvgg),
    ('Degradation_Predictor (DASR / CDDNet)', _degradation_predictor),
]


# -- verification ---------------------------------------------------------------------------------
def _mismatch(net, sd):
    own = net.state_dict()
    missing, unexpected, shapes = state_dict_diff(own, sd)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing key(s), e.g. {missing[0]}')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}')
        if shapes:
            parts.append(f'shape of {shapes[0]}: file {tuple(sd[shapes[0]].shape)} vs {tuple(own[shapes[0]].shape)}')
        return '; '.join(parts)
    return None


def build_detected(type_name, kwargs):
    """The network for a detection result (weights not loaded)."""
    cls = ARCH_REGISTRY.get(type_name)
    with torch.random.fork_rng():  # building must not move the caller's random stream
        return cls(**kwargs)


def detect_arch(state_dict, source=None):
    """``(type_name, kwargs)`` of the realsr arch whose keys and shapes are exactly those of
    ``state_dict`` (a bare state dict: pick ``params_ema``/``params`` first). Raises
    :class:`ArchNotDetected` listing what was tried."""
    sd = {k: v for k, v in strip_module_prefix(state_dict).items() if isinstance(v, torch.Tensor)}
    tried = []
    for family, detector in DETECTORS:
        try:
            type_name, kwargs = detector(sd)
        except _NoMatch as err:
            tried.append((family, str(err)))
            continue
        try:
            net = build_detected(type_name, kwargs)
        except KeyError:
            tried.append((family, f'{type_name} is not a registered arch'))
            continue
        except (TypeError, ValueError) as err:
            tried.append((family, f'{type_name}({kwargs}) cannot be built: {err}'))
            continue
        problem = _mismatch(net, sd)
        if problem is None:
            return type_name, kwargs
        tried.append((family, f'{type_name} with {kwargs} differs: {problem}'))
    raise ArchNotDetected(tried, source)
