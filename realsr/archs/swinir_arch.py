"""SwinIR: image restoration with residual Swin Transformer blocks (BasicSR ``SwinIR``).

Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCV-W 2021.

Checkpoint compatibility (official JingyunLiang/SwinIR and BasicSR files load with
``strict=True``): same constructor arguments and defaults, same attribute names, and the same
persistent buffers -- ``relative_position_index`` in every block and ``attn_mask`` in shifted
blocks, computed for the construction ``img_size`` (so a model must be built with the
checkpoint's img_size, e.g. 48 or 64). ``mean`` is a non-persistent buffer (it moves with the
module but is not in the state dict).

Differences from the reference, none of which changes results:
- window attention runs through ``F.scaled_dot_product_attention`` with the relative-position
  bias (plus the shift mask) as an additive float mask; ``attn_impl='explicit'`` selects the
  plain softmax path kept as the reference (equal within float32 rounding);
- shift masks for an input size other than the construction size are built on the input's device
  once per size and kept, as bool, in one small LRU cache per model (:class:`ShiftMaskCache`,
  the last ``_MASK_CACHE_SIZE`` sizes) shared by all its shifted blocks, not recomputed every
  forward; blocks without a shift use no mask at all (the reference adds an all-zero mask there);
- ``pad_mode``: ``'none'`` (default) behaves like BasicSR's arch, which requires sizes that are
  multiples of the window (a ValueError names the sizes otherwise); ``'reflect'`` reflect-pads
  bottom/right to a window multiple and crops the output, like the official SwinIR forward.
"""
import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import checkpoint as torch_checkpoint

from realsr.archs.arch_util import Upsample
from realsr.registry import ARCH_REGISTRY
from realsr.utils.tiling import pad_to_multiple

ATTN_IMPLS = ('sdpa', 'explicit')
PAD_MODES = ('none', 'reflect')
UPSAMPLERS = ('pixelshuffle', 'pixelshuffledirect', 'nearest+conv', '')
# Shift masks of input sizes other than the construction size kept per model (least recently used
# dropped first). 4 covers tiled inference (interior, right-edge, bottom-edge and corner tiles).
_MASK_CACHE_SIZE = 4
_MASK_VALUE = -100.0  # added to attention logits between different shift regions


@torch.no_grad()
def trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.):
    """Truncated normal by the inverse-CDF method, in place; a and b are absolute bounds.

    Draws u ~ U(2*Phi((a-mean)/std) - 1, 2*Phi((b-mean)/std) - 1) and maps it through
    mean + std * sqrt(2) * erfinv(u), then clamps to [a, b]. This is the sampler BasicSR, timm and
    the official SwinIR use; recent ``torch.nn.init.trunc_normal_`` samples differently (rejection),
    which would break seeded-init parity with upstream checkpoints, so it is not used here.
    """

    def phi(z):  # standard normal CDF
        return (1. + math.erf(z / math.sqrt(2.))) / 2.

    lo, hi = phi((a - mean) / std), phi((b - mean) / std)
    tensor.uniform_(2 * lo - 1, 2 * hi - 1)
    tensor.erfinv_()
    tensor.mul_(std * math.sqrt(2.))
    tensor.add_(mean)
    tensor.clamp_(min=a, max=b)
    return tensor


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _drop_path(x, p, training):
    """Stochastic depth: zero whole samples with probability p, scale survivors by 1/(1-p)."""
    if p == 0. or not training:
        return x
    keep = 1 - p
    shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
    noise = (keep + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
    return x.div(keep) * noise


class DropPath(nn.Module):
    """Per-sample stochastic depth (Huang et al., 2016) on the residual branch; identity in eval."""

    def __init__(self, drop_prob=None):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return _drop_path(x, self.drop_prob or 0., self.training)


class Mlp(nn.Module):
    """Transformer feed-forward: fc1 -> act -> dropout -> fc2 -> dropout."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x, window_size):
    """(B, H, W, C) -> (B * nW, ws, ws, C), windows in row-major order within each image."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    # contiguous: with one window row (h == ws) reshape could return a strided view that callers cannot view
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)


def window_reverse(windows, window_size, h, w):
    """Inverse of :func:`window_partition`: (B * nW, ws, ws, C) -> (B, H, W, C)."""
    b = windows.shape[0] // ((h // window_size) * (w // window_size))
    x = windows.view(b, h // window_size, w // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def relative_position_index(window_size):
    """(N, N) int64 index into the ((2Wh-1)(2Ww-1), heads) bias table, N = Wh * Ww.

    Entry (i, j) encodes the offset of token i relative to token j: (dr + Wh-1) * (2Ww-1) + (dc + Ww-1).
    """
    wh, ww = window_size
    rows = torch.arange(wh).repeat_interleave(ww)  # token n sits at (n // ww, n % ww)
    cols = torch.arange(ww).repeat(wh)
    d_row = rows[:, None] - rows[None, :] + (wh - 1)
    d_col = cols[:, None] - cols[None, :] + (ww - 1)
    return d_row * (2 * ww - 1) + d_col


def shift_region_mask(h, w, window_size, shift_size, device=None):
    """(nW, ws², ws²) bool mask, True where two tokens of a window must not attend to each other.

    After the cyclic shift, a window at the bottom/right edge holds pixels from up to three
    regions per axis ([0, L-ws), [L-ws, L-s), [L-s, L)); tokens of different regions are masked.
    Built directly on ``device`` (a few small integer ops, nothing copied from the host).
    """

    def labels(length):
        lab = torch.zeros(length, dtype=torch.uint8, device=device)
        lab[length - window_size:] = 1
        lab[length - shift_size:] = 2
        return lab

    region = labels(h)[:, None] * 3 + labels(w)[None, :]  # (h, w) region id, 0..8
    region = window_partition(region[None, :, :, None], window_size).flatten(1)  # (nW, N)
    return region[:, None, :] != region[:, :, None]


def shift_attention_mask(h, w, window_size, shift_size, device=None):
    """(nW, ws², ws²) float additive mask: -100 between tokens of different regions, else 0 (the
    reference's ``attn_mask`` buffer; see :func:`shift_region_mask`)."""
    return shift_region_mask(h, w, window_size, shift_size, device).float() * _MASK_VALUE


class ShiftMaskCache:
    """Bool shift masks (:func:`shift_region_mask`) by (H, W, window, shift, device), least
    recently used dropped beyond ``max_entries``; one per model, shared by all its shifted blocks.

    Only single dict operations (atomic under the GIL), no lock: DataParallel replicas share the
    cache across threads (with different devices, hence different keys), and a race at worst
    builds a mask twice. Copies (``copy.deepcopy``, pickling) start empty; the masks are rebuilt
    on use. Nothing here is in a state dict.
    """

    def __init__(self, max_entries=_MASK_CACHE_SIZE):
        if max_entries < 1:
            raise ValueError(f'ShiftMaskCache: max_entries must be >= 1, got {max_entries}.')
        self.max_entries = max_entries
        self._masks = OrderedDict()

    def get(self, h, w, window_size, shift_size, device):
        key = (int(h), int(w), int(window_size), int(shift_size), torch.device(device))
        mask = self._masks.get(key)
        if mask is None:
            mask = shift_region_mask(h, w, window_size, shift_size, device)
            self._masks[key] = mask
            while len(self._masks) > self.max_entries:
                try:
                    self._masks.popitem(last=False)
                except KeyError:  # emptied by another thread meanwhile
                    break
        else:
            try:
                self._masks.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile; the mask itself is still valid
                pass
        return mask

    def __len__(self):
        return len(self._masks)

    def keys(self):
        return list(self._masks)

    def tensors(self):
        return list(self._masks.values())

    def nbytes(self):
        """Bytes held by the cached masks."""
        return sum(m.numel() * m.element_size() for m in self.tensors())

    def clear(self):
        self._masks.clear()

    def __deepcopy__(self, memo):
        return type(self)(self.max_entries)

    def __getstate__(self):
        return {'max_entries': self.max_entries}

    def __setstate__(self, state):
        self.__init__(state['max_entries'])

    def __repr__(self):
        return f'{type(self).__name__}(max_entries={self.max_entries}, sizes={len(self)}, bytes={self.nbytes()})'


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) windows with a relative-position bias.

    Args:
        dim: channels. window_size: (Wh, Ww). num_heads: heads (head dim = dim // heads).
        qkv_bias: bias in the qkv projection. qk_scale: overrides head_dim ** -0.5.
        attn_drop, proj_drop: dropout on the attention weights / the output.
        attn_impl: 'sdpa' (torch's scaled_dot_product_attention, default) or 'explicit'
            (matmul + softmax, the reference); can also be changed later via the attribute.
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0., proj_drop=0.,
                 attn_impl='sdpa'):
        super().__init__()
        self.dim = dim
        self.window_size = _pair(window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.attn_impl = attn_impl
        # Creation order (bias table, qkv, proj, then the table's init) fixes the seeded init.
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer('relative_position_index', relative_position_index(self.window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=.02)

    def relative_position_bias(self, index=None):
        """(heads, N, N) bias gathered from the table by ``index`` (default: this block's buffer; HAT
        passes the one index its blocks share)."""
        n = self.window_size[0] * self.window_size[1]
        index = self.relative_position_index if index is None else index
        bias = self.relative_position_bias_table[index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def forward(self, x, mask=None, rpi=None):
        """x: (B * nW, N, C) windows (image-major); mask: (nW, N, N), additive (float) or bool (True:
        masked, i.e. -100 added), or None; rpi: the (N, N) relative position index, if not the buffer."""
        bw, n, c = x.shape
        heads = self.num_heads
        nw = 1 if mask is None else mask.shape[0]
        b = bw // nw
        qkv = self.qkv(x).view(b, nw, n, 3, heads, c // heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # each (b, nW, heads, N, hd)
        bias = self.relative_position_bias(rpi).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None and mask.dtype == torch.bool:
            # the same values (and gradient) as adding the float mask: bias + (-100 or 0)
            bias = bias + mask.unsqueeze(1).to(bias.dtype) * _MASK_VALUE  # (nW, heads, N, N)
        elif mask is not None:
            bias = bias + mask.unsqueeze(1).to(bias.dtype)
        if self.attn_impl == 'sdpa':
            # Windows are folded into the head axis so the (nW * heads, N, N) mask broadcasts over
            # the batch without being copied per image.
            fold = (b, nw * heads, n, c // heads)
            out = F.scaled_dot_product_attention(
                q.reshape(fold), k.reshape(fold), v.reshape(fold),
                attn_mask=bias.reshape(1, nw * heads, n, n).to(q.dtype),
                dropout_p=self.attn_drop.p if self.training else 0., scale=self.scale)
            out = out.view(b, nw, heads, n, c // heads)
        elif self.attn_impl == 'explicit':
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            attn = self.attn_drop(attn.softmax(dim=-1))
            out = attn @ v
        else:
            raise ValueError(f'WindowAttention: attn_impl={self.attn_impl!r}; use one of {ATTN_IMPLS}.')
        out = out.permute(0, 1, 3, 2, 4).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self):
        return f'dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, attn_impl={self.attn_impl}'


class SwinTransformerBlock(nn.Module):
    """Pre-norm Swin block: x + attn(LN(x)) over (shifted) windows, then x + MLP(LN(x)).

    Construction rule (as the reference): if min(input_resolution) <= window_size the block
    uses one window covering the map (window = min(input_resolution)) and no shift.
    ``attn_mask`` (shifted blocks only) is a persistent buffer for ``input_resolution``; other
    sizes use bool masks from ``mask_cache``, a :class:`ShiftMaskCache` that the model (SwinIR,
    DRCT) replaces by one shared by all its blocks (a block built alone has its own).
    """

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4., qkv_bias=True,
                 qk_scale=None, drop=0., attn_drop=0., drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 attn_impl='sdpa'):
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
            raise ValueError(f'SwinTransformerBlock: shift_size {self.shift_size} must be in [0, {self.window_size}).')

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                    attn_drop=attn_drop, proj_drop=drop, attn_impl=attn_impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

        mask = self.calculate_mask(self.input_resolution) if self.shift_size > 0 else None
        self.register_buffer('attn_mask', mask)  # None registers nothing in the state dict
        self.mask_cache = ShiftMaskCache()  # other sizes; a plain attribute, not in the state dict

    def calculate_mask(self, x_size):
        """Shift mask (nW, ws², ws²) for an (H, W) map; None for blocks without a shift."""
        if self.shift_size == 0:
            return None
        return shift_attention_mask(x_size[0], x_size[1], self.window_size, self.shift_size)

    def mask_for(self, x_size, device):
        """The mask to use at ``x_size``: the (float) buffer at the construction size, else the
        cached bool mask for that size (built once per size, on ``device``)."""
        if self.shift_size == 0:
            return None
        if tuple(x_size) == self.input_resolution and self.attn_mask is not None:
            return self.attn_mask
        return self.mask_cache.get(x_size[0], x_size[1], self.window_size, self.shift_size, device)

    def forward(self, x, x_size):
        h, w = x_size
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, ws).view(-1, ws * ws, c)
        windows = self.attn(windows, mask=self.mask_for((h, w), x.device))
        x = window_reverse(windows.view(-1, ws, ws, c), ws, h, w)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self):
        return (f'dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, '
                f'window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}')


class BasicLayer(nn.Module):
    """``depth`` Swin blocks at one resolution; odd blocks shift by window_size // 2."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=4., qkv_bias=True,
                 qk_scale=None, drop=0., attn_drop=0., drop_path=0., norm_layer=nn.LayerNorm, downsample=None,
                 use_checkpoint=False, attn_impl='sdpa'):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(
                dim=dim, input_resolution=input_resolution, num_heads=num_heads, window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                norm_layer=norm_layer, attn_impl=attn_impl) for i in range(depth)
        ])
        self.downsample = downsample(input_resolution, dim=dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x, x_size):
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch_checkpoint.checkpoint(blk, x, x_size, use_reentrant=False)
            else:
                x = blk(x, x_size)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


def _residual_conv(dim, resi_connection):
    """'1conv': one 3x3 conv; '3conv': 3x3 to dim/4, LReLU, 1x1, LReLU, 3x3 back (saves parameters)."""
    if resi_connection == '1conv':
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == '3conv':
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"resi_connection={resi_connection!r}; use '1conv' or '3conv'.")


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H*W, C) tokens, optionally LayerNorm-ed (patch_size only sets the
    nominal resolution; SwinIR uses 1)."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None):
        super().__init__()
        img_size, patch_size = _pair(img_size), _pair(patch_size)
        self.img_size = img_size
        self.patch_size = patch_size
        self.patches_resolution = [img_size[0] // patch_size[0], img_size[1] // patch_size[1]]
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class PatchUnEmbed(nn.Module):
    """(B, H*W, C) tokens -> (B, C, H, W)."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None):
        super().__init__()
        img_size, patch_size = _pair(img_size), _pair(patch_size)
        self.img_size = img_size
        self.patch_size = patch_size
        self.patches_resolution = [img_size[0] // patch_size[0], img_size[1] // patch_size[1]]
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim

    def forward(self, x, x_size):
        return x.transpose(1, 2).reshape(x.shape[0], self.embed_dim, x_size[0], x_size[1])


class RSTB(nn.Module):
    """Residual Swin Transformer block: x + conv(Swin blocks(x)) (conv on the 2-D map)."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=4., qkv_bias=True,
                 qk_scale=None, drop=0., attn_drop=0., drop_path=0., norm_layer=nn.LayerNorm, downsample=None,
                 use_checkpoint=False, img_size=224, patch_size=4, resi_connection='1conv', attn_impl='sdpa'):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.residual_group = BasicLayer(
            dim=dim, input_resolution=input_resolution, depth=depth, num_heads=num_heads, window_size=window_size,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
            drop_path=drop_path, norm_layer=norm_layer, downsample=downsample, use_checkpoint=use_checkpoint,
            attn_impl=attn_impl)
        self.conv = _residual_conv(dim, resi_connection)
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=0, embed_dim=dim)
        self.patch_unembed = PatchUnEmbed(img_size=img_size, patch_size=patch_size, in_chans=0, embed_dim=dim)

    def forward(self, x, x_size):
        y = self.patch_unembed(self.residual_group(x, x_size), x_size)
        return self.patch_embed(self.conv(y)) + x


class UpsampleOneStep(nn.Sequential):
    """Lightweight upsampler: one 3x3 conv to scale² * num_out_ch channels, then PixelShuffle."""

    def __init__(self, scale, num_feat, num_out_ch, input_resolution=None):
        self.num_feat = num_feat
        self.input_resolution = input_resolution
        super().__init__(nn.Conv2d(num_feat, (scale**2) * num_out_ch, 3, 1, 1), nn.PixelShuffle(scale))


class WindowSRMixin:
    """What SwinIR and DRCT share: weight init, the no-weight-decay names, switching the attention
    path, and padding (or refusing) an input that is not a window multiple."""

    # attention logits overflow float16 in long runs (both upstream repositories train in fp32):
    # use_amp without amp_bf16 trains these archs in bf16 (realsr.runtime.train_step.resolve_precision)
    fp16_overflows = True
    # the buffers (relative position index, shift masks, mean) never change in training: DDP need
    # not re-broadcast them every forward (SwinIR-M: 19 MiB, DRCT-L: 126 MiB an iteration)
    constant_buffers = True

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {'absolute_pos_embed'}

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {'relative_position_bias_table'}

    def set_attn_impl(self, attn_impl):
        """Switch every window attention to 'sdpa' or 'explicit'; returns self."""
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'{type(self).__name__}: attn_impl={attn_impl!r}; use one of {ATTN_IMPLS}.')
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.attn_impl = attn_impl
        return self

    def share_mask_cache(self, max_entries=_MASK_CACHE_SIZE):
        """Give every Swin block of the model one :class:`ShiftMaskCache` (called at the end of
        ``__init__``): a mask depends only on size, window, shift and device, so the shifted blocks
        share it instead of each holding a copy. Returns the cache."""
        cache = ShiftMaskCache(max_entries)
        for m in self.modules():
            if isinstance(m, SwinTransformerBlock):
                m.mask_cache = cache
        return cache

    def mask_caches(self):
        """The distinct :class:`ShiftMaskCache` objects used by the model's blocks (one normally)."""
        caches = {}
        for m in self.modules():
            if isinstance(m, SwinTransformerBlock):
                caches[id(m.mask_cache)] = m.mask_cache
        return list(caches.values())

    def train(self, mode=True):
        """As ``nn.Module.train``; going from eval to training also empties the mask caches, so the
        masks of validation sizes do not stay on the device through training (which normally runs
        at the construction size and uses the ``attn_mask`` buffers)."""
        if mode and not self.training:
            for cache in self.mask_caches():
                cache.clear()
        return super().train(mode)

    def build_embedding(self, in_chans, embed_dim, depths, img_size, patch_size, img_range, ape, patch_norm,
                        mlp_ratio, norm_layer, drop_rate):
        """Mean and range normalisation, ``conv_first``, the patch (un)embedding and the optional
        absolute position embedding, created in the originals' order (so a seeded init matches).
        ``mean`` is a non-persistent buffer: it follows ``.to()`` but is not in the state dict."""
        self.img_range = img_range
        mean = (torch.tensor((0.4488, 0.4371, 0.4040)).view(1, 3, 1, 1) if in_chans == 3
                else torch.zeros(1, 1, 1, 1))  # float32 values (as the originals), in the parameters' dtype
        self.register_buffer('mean', mean.to(torch.get_default_dtype()), persistent=False)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.num_features = embed_dim
        self.mlp_ratio = mlp_ratio
        norm = norm_layer if patch_norm else None
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=embed_dim,
                                      embed_dim=embed_dim, norm_layer=norm)
        self.patches_resolution = self.patch_embed.patches_resolution
        self.patch_unembed = PatchUnEmbed(img_size=img_size, patch_size=patch_size, in_chans=embed_dim,
                                          embed_dim=embed_dim, norm_layer=norm)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
            trunc_normal_(self.absolute_pos_embed, std=.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

    def image_mean(self, x):
        """``mean`` in x's dtype (converted only when the module's dtype differs)."""
        return self.mean if self.mean.dtype == x.dtype else self.mean.to(x.dtype)

    def run_layer(self, layer, x, x_size):
        return layer(x, x_size)

    def forward_features(self, x):
        x_size = (x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = self.run_layer(layer, x, x_size)
        x = self.norm(x)
        return self.patch_unembed(x, x_size)

    def size_multiple(self):
        """Input height/width must be a multiple of this (the blocks' window) when pad_mode='none'."""
        windows = {m.window_size for m in self.modules() if isinstance(m, SwinTransformerBlock)}
        return math.lcm(*windows) if windows else 1

    def reflect_pad_multiple(self):
        """What pad_mode='reflect' pads to."""
        return self.size_multiple()

    def pad_input(self, x):
        """Reflect-pad bottom/right (pad_mode='reflect') or check the size (pad_mode='none')."""
        h, w = x.shape[2:]
        if self.pad_mode == 'reflect':  # the test-time helper (replicate where a side is smaller than the pad)
            return pad_to_multiple(x, self.reflect_pad_multiple())[0]
        m = self.size_multiple()
        if h % m or w % m:
            raise ValueError(f'{type(self).__name__}: input size {h}x{w} is not a multiple of the window size {m}; '
                             f"pad the input (e.g. pad_mode='reflect') or crop it to a multiple of {m}.")
        return x


@ARCH_REGISTRY.register()
class SwinIR(WindowSRMixin, nn.Module):
    """SwinIR: conv_first -> residual Swin Transformer groups (RSTB) -> conv_after_body (+ skip)
    -> reconstruction ('pixelshuffle', 'pixelshuffledirect', 'nearest+conv' or '' for
    restoration without upscaling, which adds a global input skip).

    Args (names and defaults as BasicSR / official SwinIR):
        img_size: training patch size (int or pair); sets the stored shift masks and the window
            rule, so build with the checkpoint's value. patch_size: 1 in all released models.
        in_chans: image channels (output has the same). embed_dim: token channels.
        depths, num_heads: blocks and heads per RSTB. window_size, mlp_ratio, qkv_bias, qk_scale.
        drop_rate, attn_drop_rate, drop_path_rate: dropouts and stochastic depth (linear ramp).
        norm_layer: LayerNorm class. ape: learned absolute position embedding. patch_norm:
        LayerNorm after the patch embedding. use_checkpoint: activation checkpointing per block.
        upscale: 2, 3, 4, 8 (pixelshuffle), any for pixelshuffledirect, 4 for nearest+conv.
        img_range: input scaling after mean subtraction (1 or 255).
        resi_connection: '1conv' or '3conv'.
        attn_impl: 'sdpa' (default) or 'explicit' (reference softmax path); see set_attn_impl.
        pad_mode: 'none' (BasicSR: sizes must be window multiples) or 'reflect' (official SwinIR:
            reflect-pad bottom/right to a window multiple, crop the output).
    """

    def __init__(self, img_size=64, patch_size=1, in_chans=3, embed_dim=96, depths=(6, 6, 6, 6),
                 num_heads=(6, 6, 6, 6), window_size=7, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop_rate=0.,
                 attn_drop_rate=0., drop_path_rate=0.1, norm_layer=nn.LayerNorm, ape=False, patch_norm=True,
                 use_checkpoint=False, upscale=2, img_range=1., upsampler='', resi_connection='1conv',
                 attn_impl='sdpa', pad_mode='none'):
        super().__init__()
        if upsampler not in UPSAMPLERS:
            raise ValueError(f'SwinIR: upsampler={upsampler!r}; use one of {UPSAMPLERS}.')
        if resi_connection not in ('1conv', '3conv'):
            raise ValueError(f"SwinIR: resi_connection={resi_connection!r}; use '1conv' or '3conv'.")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'SwinIR: attn_impl={attn_impl!r}; use one of {ATTN_IMPLS}.')
        if pad_mode not in PAD_MODES:
            raise ValueError(f'SwinIR: pad_mode={pad_mode!r}; use one of {PAD_MODES}.')
        if upsampler == 'nearest+conv' and upscale != 4:
            raise ValueError(f"SwinIR: upsampler 'nearest+conv' supports upscale 4 only, got {upscale}.")
        if len(depths) != len(num_heads):
            raise ValueError(f'SwinIR: depths {list(depths)} and num_heads {list(num_heads)} differ in length.')
        num_out_ch = in_chans
        num_feat = 64
        self.upscale = upscale
        self.upsampler = upsampler
        self.window_size = window_size
        self.pad_mode = pad_mode
        self.build_embedding(in_chans, embed_dim, depths, img_size, patch_size, img_range, ape, patch_norm, mlp_ratio,
                             norm_layer, drop_rate)
        patches_resolution = self.patches_resolution

        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths))]  # stochastic depth ramp
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(
                RSTB(dim=embed_dim, input_resolution=(patches_resolution[0], patches_resolution[1]), depth=depths[i],
                     num_heads=num_heads[i], window_size=window_size, mlp_ratio=self.mlp_ratio, qkv_bias=qkv_bias,
                     qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                     drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer, downsample=None,
                     use_checkpoint=use_checkpoint, img_size=img_size, patch_size=patch_size,
                     resi_connection=resi_connection, attn_impl=attn_impl))
        self.norm = norm_layer(self.num_features)
        self.conv_after_body = _residual_conv(embed_dim, resi_connection)

        # reconstruction
        if self.upsampler == 'pixelshuffle':
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))  # default slope 0.01, as upstream
            self.upsample = Upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        elif self.upsampler == 'pixelshuffledirect':
            self.upsample = UpsampleOneStep(upscale, embed_dim, num_out_ch,
                                            (patches_resolution[0], patches_resolution[1]))
        elif self.upsampler == 'nearest+conv':
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        else:
            self.conv_last = nn.Conv2d(embed_dim, num_out_ch, 3, 1, 1)

        self.apply(self._init_weights)
        self.share_mask_cache()

    def reflect_pad_multiple(self):
        """The official SwinIR forward pads to window_size."""
        return self.window_size

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
        elif self.upsampler == 'pixelshuffledirect':
            x = self.conv_first(x)
            x = self.conv_after_body(self.forward_features(x)) + x
            x = self.upsample(x)
        elif self.upsampler == 'nearest+conv':
            x = self.conv_first(x)
            x = self.conv_after_body(self.forward_features(x)) + x
            x = self.conv_before_upsample(x)
            x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode='nearest')))
            x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode='nearest')))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        else:
            x_first = self.conv_first(x)
            res = self.conv_after_body(self.forward_features(x_first)) + x_first
            x = x + self.conv_last(res)

        x = x / self.img_range + mean
        scale = self.upscale if self.upsampler else 1
        return x[:, :, :h * scale, :w * scale]
