"""HAT: Hybrid Attention Transformer for SR (XPixelGroup/HAT ``HAT``).

Chen et al., "Activating More Pixels in Image Super-Resolution Transformer", CVPR 2023. One class
builds the released configurations (HAT's option files; all with img_size 64, window_size 16,
conv_scale 0.01, overlap_ratio 0.5, mlp_ratio 2, upsampler 'pixelshuffle'):

=======  =========  ==========  ==========  ==============  ==============
config   embed_dim  depths      num_heads   compress_ratio  squeeze_factor
=======  =========  ==========  ==========  ==============  ==============
HAT-S    144        6 x [6]     6 x [6]     24              24
HAT      180        6 x [6]     6 x [6]     3               30
HAT-L    180        12 x [6]    12 x [6]    3               30
=======  =========  ==========  ==========  ==============  ==============

Checkpoint compatibility (HAT's released files load with ``strict=True``): the upstream
constructor arguments and defaults, and the upstream module tree, hence the same keys:
``relative_position_index_SA`` / ``relative_position_index_OCA`` (persistent int64 buffers, held
once by the model and passed to every block), ``conv_first``, ``patch_embed.norm``,
``layers.{i}.residual_group.blocks.{j}.{norm1,attn.{relative_position_bias_table,qkv,proj},
conv_block.cab.{0,2,3.attention.{1,3}},norm2,mlp.{fc1,fc2}}``,
``layers.{i}.residual_group.overlap_attn.{norm1,qkv,relative_position_bias_table,proj,norm2,mlp}``,
``layers.{i}.conv``, ``norm``, ``conv_after_body``, ``conv_before_upsample.0``, ``upsample.{0,2..}``,
``conv_last``. No block stores a shift mask (upstream computes it every forward), and ``mean`` is
a non-persistent buffer.

Differences from the reference, none of which changes results:
- the hybrid attention blocks use SwinIR's window attention (:mod:`realsr.archs.swinir_arch`: SDPA
  with the bias as an additive mask, ``attn_impl='explicit'`` for the softmax reference path), the
  overlapping cross-attention block the same two paths;
- shift masks are built once per input size and device and kept, as bool, in the model's small LRU
  :class:`~realsr.archs.swinir_arch.ShiftMaskCache` (upstream rebuilds a float mask on the host
  every forward);
- ``use_checkpoint`` (ignored upstream) checkpoints each residual group's activations in training;
- ``pad_mode``: 'none' (default, as upstream: sizes must be window multiples; the model pads, see
  :class:`realsr.models.hat_model.HATModel`) or 'reflect' (pad bottom/right, crop the output);
- configurations upstream cannot run are refused at construction with the argument named: an
  ``img_size`` below the window, or a window and overlapping window (``window_size +
  int(overlap_ratio * window_size)``) that differ by an odd number (the unfold then yields fewer
  key windows than query windows); upsampler names other than 'pixelshuffle' and '' (upstream
  builds no reconstruction for them and returns the input) are refused too.
"""
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import checkpoint as torch_checkpoint

from realsr.archs.arch_util import Upsample
from realsr.archs.swinir_arch import (ATTN_IMPLS, PAD_MODES, DropPath, Mlp, PatchEmbed, PatchUnEmbed, ShiftMaskCache,
                                      WindowAttention, WindowSRMixin, relative_position_index, trunc_normal_,
                                      window_partition, window_reverse)
from realsr.registry import ARCH_REGISTRY

UPSAMPLERS = ('pixelshuffle', '')
RESI_CONNECTIONS = ('1conv', 'identity')


def overlap_window_size(window_size, overlap_ratio):
    """Side of the key/value window of the overlapping cross-attention, as upstream."""
    return int(window_size * overlap_ratio) + window_size


def overlap_position_index(window_size, overlap_size):
    """(ws², ows²) int64 index into OCAB's ((ws + ows - 1)², heads) bias table: entry (i, j) encodes
    where key j of the enlarged (ows) window sits relative to query i of the (ws) window."""
    q_rows = torch.arange(window_size).repeat_interleave(window_size)
    q_cols = torch.arange(window_size).repeat(window_size)
    k_rows = torch.arange(overlap_size).repeat_interleave(overlap_size)
    k_cols = torch.arange(overlap_size).repeat(overlap_size)
    offset = window_size - overlap_size + 1  # makes the smallest offset 0
    d_row = k_rows[None, :] - q_rows[:, None] + offset
    d_col = k_cols[None, :] - q_cols[:, None] + offset
    return d_row * (window_size + overlap_size - 1) + d_col


def _attend(q, k, v, bias, scale, attn_impl, dropout_p=0.):
    """Softmax attention with an additive bias: SDPA, or the explicit reference path."""
    if attn_impl == 'sdpa':
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p, scale=scale)
    if attn_impl == 'explicit':
        attn = ((q * scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
        return F.dropout(attn, dropout_p) @ v
    raise ValueError(f'HAT: attn_impl={attn_impl!r}; use one of {ATTN_IMPLS}.')


class ChannelAttention(nn.Module):
    """RCAN's channel attention: x * sigmoid(conv(relu(conv(avgpool(x)))))."""

    def __init__(self, num_feat, squeeze_factor=16):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, num_feat // squeeze_factor, 1, padding=0), nn.ReLU(),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1, padding=0), nn.Sigmoid())

    def forward(self, x):
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: 3x3 conv to dim / compress_ratio, GELU, 3x3 conv back, channel attention."""

    def __init__(self, num_feat, compress_ratio=3, squeeze_factor=30):
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1), nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1), ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x):
        return self.cab(x)


class HATWindowAttention(WindowAttention):
    """SwinIR's window attention without a per-block index buffer: HAT's checkpoints hold one
    index (``relative_position_index_SA``) at the model level, passed in as ``rpi``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.relative_position_index  # not in HAT's state dict; forward gets it as rpi


class HAB(nn.Module):
    """Hybrid attention block: x + attn(LN(x)) + conv_scale * CAB(LN(x)), then x + MLP(LN(x)).

    The window rule of SwinIR's block applies (a map no larger than the window is one unshifted
    window). The shift mask and the position index come from the model (one for all blocks).
    """

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, compress_ratio=3,
                 squeeze_factor=30, conv_scale=0.01, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop=0., attn_drop=0.,
                 drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm, attn_impl='sdpa'):
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError(f'HAB: shift_size {self.shift_size} must be in [0, {self.window_size}).')
        # creation order as upstream (attention, conv block, MLP), so a seeded init matches
        self.norm1 = norm_layer(dim)
        self.attn = HATWindowAttention(dim, self.window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                       attn_drop=attn_drop, proj_drop=drop, attn_impl=attn_impl)
        self.conv_scale = conv_scale
        self.conv_block = CAB(num_feat=dim, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x, x_size, rpi_sa, attn_mask):
        h, w = x_size
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        conv_x = self.conv_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, ws).view(-1, ws * ws, c)
        windows = self.attn(windows, mask=attn_mask if s > 0 else None, rpi=rpi_sa)
        x = window_reverse(windows.view(-1, ws, ws, c), ws, h, w)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(b, h * w, c)) + conv_x * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self):
        return (f'dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, '
                f'window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}')


class OCAB(nn.Module):
    """Overlapping cross-attention block: queries from ws x ws windows attend to keys/values of the
    enlarged ows x ows windows around them (zero-padded at the border), then x + MLP(LN(x))."""

    def __init__(self, dim, input_resolution, window_size, overlap_ratio, num_heads, qkv_bias=True, qk_scale=None,
                 mlp_ratio=2, norm_layer=nn.LayerNorm, attn_impl='sdpa'):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads)**-0.5
        self.overlap_win_size = overlap_window_size(window_size, overlap_ratio)
        self.attn_impl = attn_impl
        # creation order as upstream (qkv, bias table, proj, MLP), so a seeded init matches
        self.norm1 = norm_layer(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.unfold = nn.Unfold(kernel_size=(self.overlap_win_size, self.overlap_win_size), stride=window_size,
                                padding=(self.overlap_win_size - window_size) // 2)
        side = window_size + self.overlap_win_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(side * side, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x, x_size, rpi):
        h, w = x_size
        b, _, c = x.shape
        ws, ows, heads = self.window_size, self.overlap_win_size, self.num_heads
        shortcut = x
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3 * c)
        q = window_partition(qkv[..., :c], ws).view(-1, ws * ws, heads, c // heads).transpose(1, 2)
        kv = self.unfold(qkv[..., c:].permute(0, 3, 1, 2))  # (b, 2c * ows², nW): [k channels, v channels]
        kv = kv.view(b, 2, heads, c // heads, ows * ows, -1).permute(1, 0, 5, 2, 4, 3)  # (2, b, nW, heads, ows², hd)
        k, v = (t.reshape(-1, heads, ows * ows, c // heads) for t in kv.unbind(0))
        bias = self.relative_position_bias_table[rpi.view(-1)].view(ws * ws, ows * ows, heads).permute(2, 0, 1)
        out = _attend(q, k, v, bias.unsqueeze(0), self.scale, self.attn_impl)  # (b * nW, heads, ws², hd)
        out = window_reverse(out.transpose(1, 2).reshape(-1, ws, ws, c), ws, h, w).reshape(b, h * w, c)
        x = self.proj(out) + shortcut
        return x + self.mlp(self.norm2(x))

    def extra_repr(self):
        return (f'dim={self.dim}, window_size={self.window_size}, overlap_win_size={self.overlap_win_size}, '
                f'num_heads={self.num_heads}, attn_impl={self.attn_impl}')


class AttenBlocks(nn.Module):
    """``depth`` hybrid attention blocks (odd ones shifted by window_size // 2), then one OCAB."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, compress_ratio, squeeze_factor,
                 conv_scale, overlap_ratio, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop=0., attn_drop=0.,
                 drop_path=0., norm_layer=nn.LayerNorm, attn_impl='sdpa'):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        self.blocks = nn.ModuleList([
            HAB(dim=dim, input_resolution=input_resolution, num_heads=num_heads, window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2, compress_ratio=compress_ratio,
                squeeze_factor=squeeze_factor, conv_scale=conv_scale, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                norm_layer=norm_layer, attn_impl=attn_impl) for i in range(depth)
        ])
        self.overlap_attn = OCAB(dim=dim, input_resolution=input_resolution, window_size=window_size,
                                 overlap_ratio=overlap_ratio, num_heads=num_heads, qkv_bias=qkv_bias,
                                 qk_scale=qk_scale, mlp_ratio=mlp_ratio, norm_layer=norm_layer, attn_impl=attn_impl)

    def forward(self, x, x_size, rpi_sa, rpi_oca, attn_mask):
        for blk in self.blocks:
            x = blk(x, x_size, rpi_sa, attn_mask)
        return self.overlap_attn(x, x_size, rpi_oca)


class RHAG(nn.Module):
    """Residual hybrid attention group: x + conv(AttenBlocks(x)) (conv on the 2-D map, or identity)."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, compress_ratio, squeeze_factor,
                 conv_scale, overlap_ratio, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop=0., attn_drop=0.,
                 drop_path=0., norm_layer=nn.LayerNorm, img_size=224, patch_size=4, resi_connection='1conv',
                 attn_impl='sdpa'):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.residual_group = AttenBlocks(
            dim=dim, input_resolution=input_resolution, depth=depth, num_heads=num_heads, window_size=window_size,
            compress_ratio=compress_ratio, squeeze_factor=squeeze_factor, conv_scale=conv_scale,
            overlap_ratio=overlap_ratio, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop,
            attn_drop=attn_drop, drop_path=drop_path, norm_layer=norm_layer, attn_impl=attn_impl)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == '1conv' else nn.Identity()
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=0, embed_dim=dim)
        self.patch_unembed = PatchUnEmbed(img_size=img_size, patch_size=patch_size, in_chans=0, embed_dim=dim)

    def forward(self, x, x_size, rpi_sa, rpi_oca, attn_mask):
        y = self.residual_group(x, x_size, rpi_sa, rpi_oca, attn_mask)
        return self.patch_embed(self.conv(self.patch_unembed(y, x_size))) + x


@ARCH_REGISTRY.register()
class HAT(WindowSRMixin, nn.Module):
    """HAT: conv_first -> residual hybrid attention groups (RHAG) -> norm -> conv_after_body (+ skip)
    -> pixelshuffle reconstruction (conv_before_upsample, Upsample, conv_last).

    Args (names and defaults as upstream ``HAT``):
        img_size: training patch size (sets the window rule; 64 for all released models).
        patch_size: 1. in_chans: image channels (output has the same). embed_dim: token channels.
        depths, num_heads: blocks and heads per RHAG. window_size: attention window.
        compress_ratio, squeeze_factor: the conv block's bottleneck (embed_dim // compress_ratio) and its
            channel attention's (embed_dim // squeeze_factor). conv_scale: weight of the conv branch.
        overlap_ratio: the cross-attention's key window is window_size + int(overlap_ratio * window_size).
        mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rate, norm_layer, ape,
            patch_norm: as SwinIR. use_checkpoint: activation checkpointing per RHAG in training.
        upscale: 2^n or 3. img_range: input scaling after mean subtraction.
        upsampler: 'pixelshuffle' or '' (no reconstruction; the output is the input, as upstream).
        resi_connection: '1conv' or 'identity'.
        attn_impl: 'sdpa' (default) or 'explicit' (the reference softmax path).
        pad_mode: 'none' (sizes must be window multiples) or 'reflect' (pad bottom/right, crop).
    """

    def __init__(self, img_size=64, patch_size=1, in_chans=3, embed_dim=96, depths=(6, 6, 6, 6),
                 num_heads=(6, 6, 6, 6), window_size=7, compress_ratio=3, squeeze_factor=30, conv_scale=0.01,
                 overlap_ratio=0.5, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop_rate=0., attn_drop_rate=0.,
                 drop_path_rate=0.1, norm_layer=nn.LayerNorm, ape=False, patch_norm=True, use_checkpoint=False,
                 upscale=2, img_range=1., upsampler='', resi_connection='1conv', attn_impl='sdpa', pad_mode='none'):
        super().__init__()
        self._check_args(img_size, patch_size, embed_dim, depths, num_heads, window_size, compress_ratio,
                         squeeze_factor, overlap_ratio, upsampler, resi_connection, attn_impl, pad_mode)
        num_out_ch = in_chans
        num_feat = 64
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.overlap_ratio = overlap_ratio
        self.upscale = upscale
        self.upsampler = upsampler
        self.pad_mode = pad_mode
        self.use_checkpoint = use_checkpoint
        self.register_buffer('relative_position_index_SA', relative_position_index((window_size, window_size)))
        self.register_buffer('relative_position_index_OCA',
                             overlap_position_index(window_size, overlap_window_size(window_size, overlap_ratio)))
        self.build_embedding(in_chans, embed_dim, depths, img_size, patch_size, img_range, ape, patch_norm, mlp_ratio,
                             norm_layer, drop_rate)
        patches_resolution = tuple(self.patches_resolution)

        # stochastic depth ramp, on the CPU even under a meta/cuda default device (it is read as floats)
        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths), device='cpu')]
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(
                RHAG(dim=embed_dim, input_resolution=patches_resolution, depth=depths[i], num_heads=num_heads[i],
                     window_size=window_size, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor,
                     conv_scale=conv_scale, overlap_ratio=overlap_ratio, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                     qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                     drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer, img_size=img_size,
                     patch_size=patch_size, resi_connection=resi_connection, attn_impl=attn_impl))
        self.norm = norm_layer(self.num_features)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == '1conv' else nn.Identity()

        if upsampler == 'pixelshuffle':
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))  # default slope 0.01, as upstream
            self.upsample = Upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

        self.apply(self._init_weights)
        # shift masks per input size (upstream's attn_mask, rebuilt there every forward), one for all blocks
        self.mask_cache = ShiftMaskCache()
        self._any_shift = any(blk.shift_size > 0 for layer in self.layers for blk in layer.residual_group.blocks)

    @staticmethod
    def _check_args(img_size, patch_size, embed_dim, depths, num_heads, window_size, compress_ratio, squeeze_factor,
                    overlap_ratio, upsampler, resi_connection, attn_impl, pad_mode):
        if upsampler not in UPSAMPLERS:
            raise ValueError(f'HAT: upsampler={upsampler!r}; upstream HAT implements only {UPSAMPLERS}.')
        if resi_connection not in RESI_CONNECTIONS:
            raise ValueError(f'HAT: resi_connection={resi_connection!r}; use one of {RESI_CONNECTIONS}.')
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'HAT: attn_impl={attn_impl!r}; use one of {ATTN_IMPLS}.')
        if pad_mode not in PAD_MODES:
            raise ValueError(f'HAT: pad_mode={pad_mode!r}; use one of {PAD_MODES}.')
        if len(depths) != len(num_heads):
            raise ValueError(f'HAT: depths {list(depths)} and num_heads {list(num_heads)} differ in length.')
        for heads in num_heads:
            if embed_dim % heads:
                raise ValueError(f'HAT: embed_dim={embed_dim} is not divisible by num_heads={heads}.')
        for name, factor in (('compress_ratio', compress_ratio), ('squeeze_factor', squeeze_factor)):
            if embed_dim // factor < 1:
                raise ValueError(f'HAT: embed_dim // {name} = {embed_dim} // {factor} leaves no channels; '
                                 f'use a {name} of at most {embed_dim}.')
        img = img_size if isinstance(img_size, (tuple, list)) else (img_size, img_size)
        patch = patch_size if isinstance(patch_size, (tuple, list)) else (patch_size, patch_size)
        if min(i // p for i, p in zip(img, patch)) < window_size:
            raise ValueError(f'HAT: img_size={img_size} (patch_size {patch_size}) is smaller than window_size='
                             f'{window_size}; HAT shares one position index of the window size between its blocks, '
                             'so img_size must be at least window_size.')
        overlap = overlap_window_size(window_size, overlap_ratio)
        if (overlap - window_size) % 2:
            raise ValueError(f'HAT: window_size={window_size} with overlap_ratio={overlap_ratio} gives an overlapping '
                             f'window of {overlap}; it must differ from the window by an even number (e.g. '
                             'window_size 16 or 8 with overlap_ratio 0.5), else the key windows do not tile the image.')

    # -- what differs from SwinIR's mixin: one mask cache at the model level, indices passed in --
    def share_mask_cache(self, max_entries=None):
        """HAT's blocks hold no cache: the model's own (``mask_cache``) serves them all; returns it."""
        return self.mask_cache

    def mask_caches(self):
        return [self.mask_cache]

    def size_multiple(self):
        return self.window_size

    def set_attn_impl(self, attn_impl):
        super().set_attn_impl(attn_impl)
        for m in self.modules():
            if isinstance(m, OCAB):
                m.attn_impl = attn_impl
        return self

    def _shift_mask(self, x_size, device):
        if not self._any_shift:  # an img_size equal to the window makes every block unshifted
            return None
        return self.mask_cache.get(x_size[0], x_size[1], self.window_size, self.shift_size, device)

    def forward_features(self, x):
        x_size = (x.shape[2], x.shape[3])
        attn_mask = self._shift_mask(x_size, x.device)
        rpi_sa, rpi_oca = self.relative_position_index_SA, self.relative_position_index_OCA
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = torch_checkpoint.checkpoint(layer, x, x_size, rpi_sa, rpi_oca, attn_mask, use_reentrant=False)
            else:
                x = layer(x, x_size, rpi_sa, rpi_oca, attn_mask)
        x = self.norm(x)
        return self.patch_unembed(x, x_size)

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
