"""Batched JPEG compression in torch (``DiffJPEG``), numerically compatible with BasicSR's module.

The codec, for RGB (b, 3, h, w) images in [0, 1] and a per-sample quality:

1. zero-pad H and W (bottom/right) to multiples of 16;
2. ``x * 255`` -> JFIF full-range YCbCr; Cb and Cr 4:2:0 subsampled by 2x2 averaging;
3. each plane split into 8x8 blocks (raster order), shifted by -128, 2-D DCT-II;
4. divided by the quantisation table scaled by the quality factor, rounded (``torch.round``, or
   ``round(x) + (x - round(x))^3`` when ``differentiable=True``, which has a useful gradient);
5. decoded: multiplied back, inverse DCT (+128), blocks merged, chroma upsampled by pixel
   repetition, YCbCr -> RGB, clamped to [0, 255], divided by 255, cropped to the input size.

Compatibility details kept on purpose (they define the numbers, so the oracle is reproduced):

* quality -> factor is libjpeg's scaling without its rounding: ``5000 / q`` for ``q < 50``, else
  ``200 - 2 q``, then ``/ 100``; the table is ``base * factor`` with no floor and no clamp to [1, 255];
* the two base tables (JPEG Annex K luminance; chrominance 99 except its top-left 4x4) are used
  transposed, as in BasicSR;
* the DCT is a ``tensordot`` with the separable cosine basis and the ``alpha(u) alpha(v) / 4`` scale;
* pixels are never rounded to integers (only the DCT coefficients are).

Unlike BasicSR, the caller's ``quality`` tensor is never modified, the factor is computed for the
whole batch at once, and any float dtype/device works (the quality is cast to the image's).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['DiffJPEG', 'quality_to_factor', 'diff_round', 'Y_TABLE', 'C_TABLE']

# JPEG Annex K luminance table (rows = vertical frequency), then used transposed like BasicSR.
_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
], dtype=np.float32)
_CHROMA = np.full((8, 8), 99, dtype=np.float32)
_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]

Y_TABLE = np.ascontiguousarray(_LUMA.T)
C_TABLE = np.ascontiguousarray(_CHROMA.T)

# JFIF RGB -> YCbCr (rows: Y, Cb, Cr) and back (rows: R, G, B); applied as ``pixels @ M.T``.
_RGB2YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                      dtype=np.float32)
_YCBCR2RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=np.float32)


def _dct_basis():
    """Forward basis ``B[x, y, u, v] = cos((2x+1) u pi / 16) cos((2y+1) v pi / 16)`` and its scale."""
    n = np.arange(8)
    c = np.cos(np.outer(2 * n + 1, n) * np.pi / 16)  # c[x, u]
    basis = np.einsum('xu,yv->xyuv', c, c)
    alpha = np.array([1 / math.sqrt(2)] + [1.0] * 7)
    return basis, np.outer(alpha, alpha)


def quality_to_factor(quality):
    """JPEG quality (a number or a tensor of any shape) -> table scale factor, without modifying it.

    ``q < 50``: ``5000 / q / 100``; otherwise ``(200 - 2 q) / 100``. A tensor gives a new tensor of the
    same dtype (computed elementwise in that dtype); a number gives a Python float.
    """
    if torch.is_tensor(quality):
        return torch.where(quality < 50, 5000. / quality, 200. - quality * 2) / 100.
    quality = float(quality)
    if quality <= 0:
        raise ValueError(f'JPEG quality must be > 0, got {quality}')
    return (5000. / quality if quality < 50 else 200. - quality * 2) / 100.


def diff_round(x):
    """Rounding with a non-zero gradient: ``round(x) + (x - round(x))^3``."""
    r = torch.round(x)
    return r + (x - r)**3


class DiffJPEG(nn.Module):
    """JPEG compression and decompression of RGB (b, 3, h, w) images in [0, 1].

    Args:
        differentiable: use :func:`diff_round` instead of ``torch.round`` for the coefficients.
        check_quality: refuse qualities <= 0 given as a CPU tensor (reading the values is free there;
            on a GPU it would be a device sync, so GPU tensors are never checked). The degradation
            pipeline turns it off: its qualities come from its validated ``jpeg_range``.

    ``forward(x, quality)``: ``quality`` is a number (all samples) or a (b,) tensor / sequence (one per
    sample, continuous values allowed). Returns a new tensor shaped like ``x``.
    """

    def __init__(self, differentiable=True, check_quality=True):
        super().__init__()
        self.differentiable = differentiable
        self.check_quality = check_quality
        basis, alpha2 = _dct_basis()
        # The DCT constants are float32 like the reference's; they are cast to the image dtype on use.
        self.register_buffer('dct_basis', torch.from_numpy(basis).float(), persistent=False)
        # idct_basis[u, v, x, y] = dct_basis[x, y, u, v]
        self.register_buffer('idct_basis', torch.from_numpy(basis.transpose(2, 3, 0, 1).copy()).float(),
                             persistent=False)
        self.register_buffer('dct_scale', torch.from_numpy(alpha2 * 0.25).float(), persistent=False)
        self.register_buffer('idct_alpha', torch.from_numpy(alpha2).float(), persistent=False)
        self.register_buffer('y_table', torch.from_numpy(Y_TABLE), persistent=False)
        self.register_buffer('c_table', torch.from_numpy(C_TABLE), persistent=False)
        self.register_buffer('rgb2ycbcr', torch.from_numpy(np.ascontiguousarray(_RGB2YCBCR.T)), persistent=False)
        self.register_buffer('ycbcr2rgb', torch.from_numpy(np.ascontiguousarray(_YCBCR2RGB.T)), persistent=False)
        self.register_buffer('ycbcr_shift', torch.tensor([0., 128., 128.]), persistent=False)

    def extra_repr(self):
        return f'differentiable={self.differentiable}'

    # ---- helpers ---------------------------------------------------------------------------
    def _round(self, x):
        return diff_round(x) if self.differentiable else torch.round(x)

    @staticmethod
    def _blocks(plane):
        """(b, h, w) -> (b, h*w/64, 8, 8), blocks in raster order."""
        b, h, w = plane.shape
        return plane.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(b, -1, 8, 8)

    @staticmethod
    def _merge(blocks, h, w):
        b = blocks.shape[0]
        return blocks.reshape(b, h // 8, w // 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(b, h, w)

    def _factor(self, quality, x):
        b = x.shape[0]
        if isinstance(quality, (int, float)) and not isinstance(quality, bool):
            return quality_to_factor(quality)
        quality = torch.as_tensor(quality).to(device=x.device, dtype=x.dtype)  # a new tensor or a cast
        if quality.dim() == 0:
            quality = quality.expand(b)
        if quality.shape != (b, ):
            raise ValueError(f'DiffJPEG: quality must be a number or a ({b},) tensor, got shape {tuple(quality.shape)}')
        if self.check_quality and quality.device.type == 'cpu' and bool((quality <= 0).any()):  # no GPU sync
            raise ValueError(f'DiffJPEG: quality must be > 0, got {quality.tolist()}')
        return quality_to_factor(quality).view(b, 1, 1, 1)

    @staticmethod
    def _table(table, factor):
        # (8, 8) * number, or (b, 1, 8, 8) per sample
        if isinstance(factor, float):
            return table * factor
        return table.expand(factor.shape[0], 1, 8, 8) * factor

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, x, quality):
        if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'DiffJPEG expects an RGB (b, 3, h, w) tensor, got '
                             f'{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}')
        dtype = x.dtype
        consts = {name: getattr(self, name).to(dtype) for name in (
            'dct_basis', 'idct_basis', 'dct_scale', 'idct_alpha', 'y_table', 'c_table', 'rgb2ycbcr', 'ycbcr2rgb',
            'ycbcr_shift')}
        factor = self._factor(quality, x)
        h, w = x.shape[-2:]
        h_pad, w_pad = (-h) % 16, (-w) % 16
        if h_pad or w_pad:
            x = F.pad(x, (0, w_pad, 0, h_pad), mode='constant', value=0)
        hp, wp = h + h_pad, w + w_pad

        # encode: RGB -> YCbCr (b, H, W, 3), chroma 4:2:0
        ycc = torch.tensordot((x * 255).permute(0, 2, 3, 1), consts['rgb2ycbcr'], dims=1) + consts['ycbcr_shift']
        chroma = F.avg_pool2d(ycc[..., 1:].permute(0, 3, 1, 2), kernel_size=2, stride=2, count_include_pad=False)
        planes = {'y': ycc[..., 0], 'cb': chroma[:, 0], 'cr': chroma[:, 1]}

        decoded = {}
        for name, plane in planes.items():
            table = self._table(consts['y_table'] if name == 'y' else consts['c_table'], factor)
            ph, pw = plane.shape[-2:]
            blocks = self._blocks(plane) - 128
            coeffs = consts['dct_scale'] * torch.tensordot(blocks, consts['dct_basis'], dims=2)
            coeffs = self._round(coeffs / table)
            # decode
            coeffs = (coeffs * table) * consts['idct_alpha']
            blocks = 0.25 * torch.tensordot(coeffs, consts['idct_basis'], dims=2) + 128
            decoded[name] = self._merge(blocks, ph, pw)

        cb = decoded['cb'].repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
        cr = decoded['cr'].repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
        ycc = torch.stack((decoded['y'], cb, cr), dim=-1)
        rgb = torch.tensordot(ycc - consts['ycbcr_shift'], consts['ycbcr2rgb'], dims=1).permute(0, 3, 1, 2)
        rgb = torch.clamp(rgb, 0, 255) / 255
        return rgb[:, :, :h, :w]
