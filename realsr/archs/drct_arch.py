"""DRCT: Dense-residual-connected Transformer for SR (ming053l/DRCT ``DRCT``).

Hsu, Lee and Chou, "DRCT: Saving Image Super-resolution away from Information Bottleneck",
CVPR-W 2024. The same class builds DRCT (6 groups), DRCT-L (12 groups) and Real-DRCT (the DRCT
configuration trained with the Real-ESRGAN pipeline).

Checkpoint compatibility (upstream DRCT files load with ``strict=True``): the constructor takes
the upstream arguments with the upstream defaults (``compress_ratio``, ``squeeze_factor``,
``conv_scale``, ``overlap_ratio`` and ``use_checkpoint`` are accepted and ignored, as upstream),
and the module tree gives the same state-dict keys and persistent buffers:
``layers.{i}.swin{1..5}.*`` with ``attn.relative_position_index`` everywhere and ``attn_mask`` in
the shifted blocks swin2/swin4 when img_size > window, ``layers.{i}.adjust{1..5}.*``,
``conv_first``, ``patch_embed.norm``, ``norm``, ``conv_after_body``, ``conv_before_upsample.0``,
``upsample.{0,2..}``, ``conv_last``. ``mean`` is a non-persistent buffer, not in the state dict.

The Swin blocks, window attention (SDPA with an explicit reference path), shift masks (one small
per-model cache of the sizes other than img_size, shared by all blocks) and patch (un)embedding
are those of :mod:`realsr.archs.swinir_arch`.

Reconstruction: upstream implements only ``upsampler='pixelshuffle'``; with ``''`` it builds no
reconstruction layers and its forward returns the input (after the mean round trip). Both are
supported here; other upsampler names (silently ignored upstream) raise a ValueError.
Input sizes must be multiples of the window (upstream has no internal padding either; the model
pads, see :class:`realsr.models.drct_model.DRCTModel`) unless ``pad_mode='reflect'``.
"""
import torch
from torch import nn
from torch.utils import checkpoint as torch_checkpoint

from realsr.archs.arch_util import Upsample
from realsr.archs.swinir_arch import (ATTN_IMPLS, PAD_MODES, PatchEmbed, PatchUnEmbed, SwinTransformerBlock,
                                      WindowSRMixin)
from realsr.registry import ARCH_REGISTRY

UPSAMPLERS = ('pixelshuffle', '')
RESI_CONNECTIONS = ('1conv', 'identity')


def rdg_block_heads(dim, num_heads):
    """Heads for a dense block on ``dim`` channels: num_heads minus (dim mod num_heads), as upstream."""
    return num_heads - dim % num_heads


class RDG(nn.Module):
    """Residual dense group: five Swin blocks on growing channel counts, densely connected.

    Block k (1..5) sees the group input concatenated with the gc-channel outputs of the earlier
    blocks (dim + (k-1)*gc channels); a 1x1 conv ``adjust{k}`` maps its output to gc channels
    (LeakyReLU 0.2), the last one back to dim channels (no activation). Output: 0.2 * x5 + x.
    Blocks 2 and 4 are shifted; blocks 4 and 5 use an MLP ratio of 1; all five use the group's
    first drop-path rate. Block 1 has ``num_heads`` heads, blocks 2..5 ``rdg_block_heads``.
    """

    def __init__(self, dim, input_resolution, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop,
                 drop_path, norm_layer, gc, patch_size, img_size, attn_impl='sdpa'):
        super().__init__()
        rate = drop_path[0] if isinstance(drop_path, (list, tuple)) else drop_path
        for k in range(1, 6):
            in_dim = dim + (k - 1) * gc
            block = SwinTransformerBlock(
                dim=in_dim, input_resolution=input_resolution,
                num_heads=num_heads if k == 1 else rdg_block_heads(in_dim, num_heads), window_size=window_size,
                shift_size=window_size // 2 if k in (2, 4) else 0, mlp_ratio=mlp_ratio if k <= 3 else 1,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop, drop_path=rate,
                norm_layer=norm_layer, attn_impl=attn_impl)
            setattr(self, f'swin{k}', block)  # creation order swin1, adjust1, swin2, ... as upstream
            setattr(self, f'adjust{k}', nn.Conv2d(in_dim, gc if k < 5 else dim, 1))
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        self.pe = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=0, embed_dim=dim, norm_layer=None)
        self.pue = PatchUnEmbed(img_size=img_size, patch_size=patch_size, in_chans=0, embed_dim=dim, norm_layer=None)

    @staticmethod
    def _to_map(tokens, x_size):
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, x_size[0], x_size[1])

    def forward(self, x, x_size):
        feats = [x]
        for k in range(1, 6):
            y = getattr(self, f'swin{k}')(torch.cat(feats, -1) if k > 1 else x, x_size)
            y = getattr(self, f'adjust{k}')(self._to_map(y, x_size))
            if k < 5:
                y = self.lrelu(y)
            feats.append(self.pe(y))
        return feats[-1] * 0.2 + x


@ARCH_REGISTRY.register()
class DRCT(WindowSRMixin, nn.Module):
    """DRCT: conv_first -> residual dense groups (RDG) -> norm -> conv_after_body (+ skip)
    -> pixelshuffle reconstruction (conv_before_upsample, Upsample, conv_last).

    Args (names and defaults as upstream ``DRCT``):
        img_size: training patch size; sets the stored shift masks and the window rule (build with
            the checkpoint's value, 64 for all released models). patch_size: 1.
        in_chans: image channels (output has the same). embed_dim: token channels.
        depths: one entry per RDG (only the count and the sum, for the drop-path ramp, matter).
        num_heads: heads per RDG. window_size, mlp_ratio, qkv_bias, qk_scale: attention settings.
        compress_ratio, squeeze_factor, conv_scale, overlap_ratio: unused (kept for option files).
        drop_rate, attn_drop_rate, drop_path_rate, norm_layer, ape, patch_norm: as SwinIR.
        use_checkpoint: unused upstream; here activation checkpointing per RDG when training.
        upscale: 2^n or 3. img_range: input scaling after mean subtraction.
        upsampler: 'pixelshuffle' or '' (no reconstruction, output = input, as upstream).
        resi_connection: '1conv' or 'identity'. gc: growth channels of the dense connections.
        attn_impl: 'sdpa' (default) or 'explicit' (reference softmax path).
        pad_mode: 'none' (sizes must be window multiples) or 'reflect' (pad bottom/right, crop).
    """

    def __init__(self, img_size=64, patch_size=1, in_chans=3, embed_dim=96, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6),
                 window_size=7, compress_ratio=3, squeeze_factor=30, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=4.,
                 qkv_bias=True, qk_scale=None, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.1,
                 norm_layer=nn.LayerNorm, ape=False, patch_norm=True, use_checkpoint=False, upscale=2, img_range=1.,
                 upsampler='', resi_connection='1conv', gc=32, attn_impl='sdpa', pad_mode='none'):
        super().__init__()
        if upsampler not in UPSAMPLERS:
            raise ValueError(f'DRCT: upsampler={upsampler!r}; upstream DRCT implements only {UPSAMPLERS}.')
        if resi_connection not in RESI_CONNECTIONS:
            raise ValueError(f'DRCT: resi_connection={resi_connection!r}; use one of {RESI_CONNECTIONS}.')
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'DRCT: attn_impl={attn_impl!r}; use one of {ATTN_IMPLS}.')
        if pad_mode not in PAD_MODES:
            raise ValueError(f'DRCT: pad_mode={pad_mode!r}; use one of {PAD_MODES}.')
        if len(depths) != len(num_heads):
            raise ValueError(f'DRCT: depths {list(depths)} and num_heads {list(num_heads)} differ in length.')
        for nh in num_heads:
            for k in range(5):
                dim = embed_dim + k * gc
                heads = nh if k == 0 else rdg_block_heads(dim, nh)
                if dim % heads:
                    raise ValueError(f'DRCT: block swin{k + 1} has {dim} channels, not divisible by its {heads} heads '
                                     f'(embed_dim={embed_dim}, gc={gc}, num_heads={nh}); use embed_dim and gc that '
                                     'are multiples of num_heads.')
        num_out_ch = in_chans
        num_feat = 64
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.upscale = upscale
        self.upsampler = upsampler
        self.pad_mode = pad_mode
        self.use_checkpoint = use_checkpoint
        self.build_embedding(in_chans, embed_dim, depths, img_size, patch_size, img_range, ape, patch_norm, mlp_ratio,
                             norm_layer, drop_rate)
        patches_resolution = self.patches_resolution

        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths))]
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(
                RDG(dim=embed_dim, input_resolution=(patches_resolution[0], patches_resolution[1]),
                    num_heads=num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                    qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer, gc=gc,
                    img_size=img_size, patch_size=patch_size, attn_impl=attn_impl))
        self.norm = norm_layer(self.num_features)
        if resi_connection == '1conv':
            self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        else:
            self.conv_after_body = nn.Identity()

        if upsampler == 'pixelshuffle':
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))  # default slope 0.01, as upstream
            self.upsample = Upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

        self.apply(self._init_weights)
        self.share_mask_cache()

    def run_layer(self, layer, x, x_size):
        if self.use_checkpoint and self.training and torch.is_grad_enabled():  # activation checkpointing per RDG
            return torch_checkpoint.checkpoint(layer, x, x_size, use_reentrant=False)
        return layer(x, x_size)

    def forward(self, x):
        h, w = x.shape[2:]
        x = self.pad_input(x)
        mean = self.image_mean(x)
        x = (x - mean) * self.img_range
        if self.upsampler == 'pixelshuffle':
            x = self.conv_first(x)
            x = self.conv_after_body(self.forward_features(x)) + x
            x = self.conv_before_upsample(x)
            x = self.conv_last(self.upsample(x))
        x = x / self.img_range + mean
        scale = self.upscale if self.upsampler == 'pixelshuffle' else 1
        return x[:, :, :h * scale, :w * scale]
