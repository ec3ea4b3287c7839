"""Region-aware batched ops for per-sample image sizes (the ``per_sample`` degradation mode).

When every sample of a batch is resized by its own factor, the samples no longer share one size.
These ops keep such a batch in a common *canvas* ``(b, c, Hc, Wc)``: sample ``i`` occupies the
top-left ``h[i] x w[i]`` region (``h``, ``w``: (b,) int64 tensors on the batch's device) and the
rest of the canvas is zero. Every op here gives, in each sample's valid region, what the plain op
gives on that sample cropped alone, and leaves the invalid region zero:

* :func:`region_resize` -- ``F.interpolate(x[i, :, :h, :w], size=(h', w'), mode)`` per sample for
  ``'area'`` (adaptive average pooling), ``'bilinear'`` and ``'bicubic'`` (``align_corners=False``,
  no antialias, cubic ``A = -0.75`` with clamped border taps), with a per-sample mode, output size
  and, optionally, the per-sample ``scale_factor`` semantics (the coordinate scale is
  ``1 / scale_factor`` instead of ``in / out``, as PyTorch does when it is given a scale factor).
  Each axis is a short list of (index, weight) taps per output position, computed the way
  PyTorch's kernels compute them (float32 coordinates and weights), applied with ``gather``
  (width first, then height, like PyTorch's bicubic kernel). PyTorch copies instead of
  interpolating when a size is unchanged, which matters only with a scale factor (1 < f < 1 + 1/h):
  on the CPU its bilinear kernel does so per axis, on CUDA bilinear and bicubic do when both sizes
  are unchanged; this is followed per device.
* :func:`region_filter2D` -- ``filter2D`` (reflect padding of ``k // 2`` at the sample's own
  border, per-sample kernel): reflected row/column index maps into the valid region, two
  ``gather``\\ s, then one grouped convolution.
* :func:`zero_invalid` / :func:`fill_invalid` -- JPEG (which zero-pads bottom/right to multiples
  of 16) is exact on a zeroed canvas, because the valid region starts at the top-left, so a
  sample's 8x8/16x16 blocks are the ones it has alone; Poisson noise counts the distinct levels
  of a sample, so the invalid region is first filled with the sample's top-left pixel (a value it
  already holds).

Canvas sizes and tap counts are plain ints fixed by the caller (from the option ranges, not from
the draws), so nothing here synchronises with the device and no op count depends on the batch:
there is no Python loop over samples (the only loop is over the taps of a resize).
"""
import torch
import torch.nn.functional as F

__all__ = ['AREA', 'BILINEAR', 'BICUBIC', 'MODE_CODES', 'valid_mask', 'zero_invalid', 'fill_invalid',
           'resize_taps', 'region_resize', 'max_taps', 'reflect_index', 'region_filter2D']

#: Integer codes of the resize modes, in the order of the pipeline's ``RESIZE_MODES``.
AREA, BILINEAR, BICUBIC = 0, 1, 2
MODE_CODES = {'area': AREA, 'bilinear': BILINEAR, 'bicubic': BICUBIC}
_CUBIC_A = -0.75


def valid_mask(h, w, height, width):
    """(b, 1, height, width) bool mask of each sample's top-left ``h x w`` region."""
    rows = torch.arange(height, device=h.device) < h.view(-1, 1)
    cols = torch.arange(width, device=w.device) < w.view(-1, 1)
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)


def zero_invalid(x, h, w):
    """``x`` with everything outside each sample's valid region set to 0."""
    return x * valid_mask(h, w, x.size(-2), x.size(-1)).to(x.dtype)


def fill_invalid(x, h, w):
    """``x`` with the invalid region of each sample/channel set to its top-left pixel, so that
    per-sample statistics of the values present (e.g. the Poisson level count) see only values of
    the valid region."""
    return torch.where(valid_mask(h, w, x.size(-2), x.size(-1)), x, x[:, :, :1, :1])


# -- resize ---------------------------------------------------------------------------------
# PyTorch's CPU kernels are compiled with floating-point contraction, which turns the first two
# (of cubic1) and the first three (of cubic2) multiply-adds of the cubic polynomials into fused
# multiply-adds; evaluating them the same way gives its float32 bicubic weights bit for bit (x86
# build of torch 2.13; evaluated plainly, the weights differ by a few ulp, up to ~7e-7).
def _fma(a, b, c):
    """``a * b + c`` rounded once to float32 (exact product and sum in float64, then one rounding;
    a float64 double rounding can differ from a true fused multiply-add only in rare ties)."""
    return (a.double() * b + c).float()


def _cubic1(x):  # |x| <= 1: ((A + 2) x - (A + 3)) x x + 1
    return _fma(x, _CUBIC_A + 2, -(_CUBIC_A + 3)) * x * x + 1


def _cubic2(x):  # 1 < |x| < 2: ((A x - 5 A) x + 8 A) x - 4 A
    return _fma(_fma(x, _CUBIC_A, -5 * _CUBIC_A), x.double(), 8 * _CUBIC_A) * x - 4 * _CUBIC_A


def max_taps(in_canvas, min_out):
    """Taps per output position that cover every mode: 4 for bicubic, and the longest adaptive
    average pooling window, ``ceil(n / m) + 1``, for inputs up to ``in_canvas`` and outputs of at
    least ``min_out``."""
    if min_out < 1:
        raise ValueError(f'resize: output sizes can fall to {min_out} px')
    return max(4, -(-int(in_canvas) // int(min_out)) + 1)


def resize_taps(n, m, out_canvas, mode, taps, scale=None):
    """Taps of a per-sample 1-D resize from ``n`` to ``m`` samples (both (b,) int64).

    ``mode``: (b,) int64 codes (:data:`AREA`, :data:`BILINEAR`, :data:`BICUBIC`); ``scale``: (b,)
    float32 coordinate scale (``1 / scale_factor``) or None for ``n / m``; ``taps``: the number of
    taps (:func:`max_taps`). Returns ``(index, weight)``, both (b, out_canvas, taps): output ``j``
    of sample ``i`` is ``sum_t weight[i, j, t] * input[index[i, j, t]]``; positions ``j >= m`` have
    zero weights and every index lies in ``[0, n - 1]``.
    """
    device = n.device
    n, m = n.view(-1, 1), m.view(-1, 1)
    last = n - 1
    j = torch.arange(out_canvas, device=device).view(1, -1)

    # PyTorch (align_corners=False): scale = 1 / scale_factor (given) or float(in) / out;
    # src = float(scale * (j + 0.5) - 0.5) with the product in double (CPU kernels).
    if scale is None:
        scale = n.to(torch.float32) / m.to(torch.float32)
    else:
        scale = scale.to(device=device, dtype=torch.float32).view(-1, 1)
    src = (scale.double() * (j.double() + 0.5) - 0.5).float()

    # bilinear: src clamped at 0, index floor(src) guarded to n - 1, second tap clamped at the end
    lin_src = src.clamp(min=0)
    lin0 = torch.minimum(torch.floor(lin_src).long(), last)
    lam1 = (lin_src - lin0.to(torch.float32)).clamp(0, 1)
    lin1 = lin0 + (lin0 < last).long()
    # bicubic: taps floor(src) - 1 .. + 2, clamped to the border
    cub0 = torch.minimum(torch.floor(src).long(), last)
    t = (src - cub0.to(torch.float32)).clamp(0, 1)
    cub_w = torch.stack((_cubic2(t + 1.0), _cubic1(t), _cubic1(1.0 - t), _cubic2((1.0 - t) + 1.0)), dim=-1)
    cub_i = (cub0.unsqueeze(-1) + torch.arange(-1, 3, device=device)).clamp(min=0)
    cub_i = torch.minimum(cub_i, last.unsqueeze(-1))
    # area (adaptive average pooling): window [floor(j n / m), ceil((j + 1) n / m))
    start = (j * n) // m
    length = ((j + 1) * n + m - 1) // m - start
    k = torch.arange(taps, device=device)
    area_i = torch.minimum(start.unsqueeze(-1) + k, last.unsqueeze(-1))
    area_w = torch.where(k < length.unsqueeze(-1), 1.0 / length.to(torch.float32).unsqueeze(-1),
                         torch.zeros((), dtype=torch.float32, device=device))

    zero_i = torch.zeros_like(lin0).unsqueeze(-1).expand(-1, -1, taps - 2)
    lin_i = torch.cat((lin0.unsqueeze(-1), lin1.unsqueeze(-1), zero_i), dim=-1)
    lin_w = torch.cat(((1 - lam1).unsqueeze(-1), lam1.unsqueeze(-1), torch.zeros_like(zero_i, dtype=torch.float32)),
                      dim=-1)
    pad_i = torch.zeros_like(cub0).unsqueeze(-1).expand(-1, -1, taps - 4)
    cub_i = torch.cat((cub_i, pad_i), dim=-1)
    cub_w = torch.cat((cub_w, torch.zeros_like(pad_i, dtype=torch.float32)), dim=-1)

    mode = mode.view(-1, 1, 1)
    index = torch.where(mode == AREA, area_i, torch.where(mode == BILINEAR, lin_i, cub_i))
    weight = torch.where(mode == AREA, area_w, torch.where(mode == BILINEAR, lin_w, cub_w))
    weight = weight * (j < m).unsqueeze(-1).to(weight.dtype)
    return index.clamp(min=0), weight


def _apply_taps(x, index, weight, dim):
    """Resample ``x`` (b, c, H, W) along ``dim`` (2 or 3) with per-sample taps (b, M, T)."""
    b, c = x.shape[:2]
    out = None
    weight = weight.to(x.dtype)
    for t in range(index.size(-1)):  # a loop over taps, not over samples
        if dim == 2:
            idx = index[:, None, :, t, None].expand(b, c, index.size(1), x.size(3))
            term = weight[:, None, :, t, None] * torch.gather(x, 2, idx)
        else:
            idx = index[:, None, None, :, t].expand(b, c, x.size(2), index.size(1))
            term = weight[:, None, None, :, t] * torch.gather(x, 3, idx)
        out = term if out is None else out + term
    return out


def region_resize(x, in_h, in_w, out_h, out_w, out_canvas, mode, min_out, scale_h=None, scale_w=None):
    """Resize every sample of the canvas ``x`` from its ``in_h x in_w`` region to ``out_h x out_w``.

    ``out_canvas``: (Hc, Wc) ints, at least every ``out_h``/``out_w``; ``min_out``: (mh, mw) ints, at
    most every ``out_h``/``out_w`` (it fixes the number of taps); ``mode``: (b,) int64 codes;
    ``scale_h``/``scale_w``: (b,) ``1 / scale_factor`` per sample (the ``scale_factor`` semantics of
    ``F.interpolate``), or None for the ``size`` semantics. Returns a (b, c, Hc, Wc) canvas that is
    zero outside the new regions.
    """
    if scale_h is not None or scale_w is not None:
        # PyTorch copies instead of interpolating when a size does not change, even with a scale
        # factor (only then do the coordinates differ): its CPU bilinear kernel per axis, its CUDA
        # bilinear and bicubic kernels when both sizes are unchanged. A scale of 1 is that copy.
        same_h, same_w = in_h == out_h, in_w == out_w
        if x.device.type == 'cpu':
            copy_h, copy_w = (mode == BILINEAR) & same_h, (mode == BILINEAR) & same_w
        else:
            copy_h = copy_w = (mode != AREA) & same_h & same_w
        if scale_h is not None:
            scale_h = torch.where(copy_h, torch.ones_like(scale_h), scale_h)
        if scale_w is not None:
            scale_w = torch.where(copy_w, torch.ones_like(scale_w), scale_w)
    idx_h, w_h = resize_taps(in_h, out_h, out_canvas[0], mode, max_taps(x.size(2), min_out[0]), scale_h)
    idx_w, w_w = resize_taps(in_w, out_w, out_canvas[1], mode, max_taps(x.size(3), min_out[1]), scale_w)
    return _apply_taps(_apply_taps(x, idx_w, w_w, 3), idx_h, w_h, 2)


# -- filter2D -------------------------------------------------------------------------------
def reflect_index(size, valid, pad):
    """(b, size + 2 pad) indices: position ``p`` of the padded axis reads ``reflect(p - pad)`` inside
    ``[0, valid)`` (reflection without repeating the edge, like ``F.pad(mode='reflect')``); far
    positions past the valid region are clamped into it (their outputs are discarded)."""
    last = valid.view(-1, 1) - 1
    r = torch.arange(-pad, size + pad, device=valid.device).view(1, -1).abs()
    r = torch.where(r > last, 2 * last - r, r)
    return torch.minimum(r.clamp(min=0), last)


def region_filter2D(x, h, w, kernel):
    """``filter2D`` of each sample's valid region with its own (or a shared) odd ``k x k`` kernel:
    ``kernel`` is (b, k, k), (1, k, k) or (k, k). Returns a canvas, zero outside the regions."""
    b, c, height, width = x.shape
    if kernel.dim() == 2:
        kernel = kernel.unsqueeze(0)
    k = kernel.size(-1)
    if k % 2 != 1:
        raise ValueError(f'region_filter2D needs an odd kernel size, got k={k}')
    pad = k // 2
    kernel = kernel.to(device=x.device, dtype=x.dtype).expand(b, k, k)
    rows = reflect_index(height, h, pad)
    cols = reflect_index(width, w, pad)
    padded = torch.gather(x, 2, rows[:, None, :, None].expand(b, c, height + 2 * pad, width))
    padded = torch.gather(padded, 3, cols[:, None, None, :].expand(b, c, height + 2 * pad, width + 2 * pad))
    weight = kernel.reshape(b, 1, k, k).repeat(1, c, 1, 1).view(b * c, 1, k, k)
    out = F.conv2d(padded.reshape(1, b * c, height + 2 * pad, width + 2 * pad), weight, groups=b * c)
    return zero_invalid(out.view(b, c, height, width), h, w)
