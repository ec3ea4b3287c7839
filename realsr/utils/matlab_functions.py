"""MATLAB-compatible image resizing (``imresize`` with the bicubic kernel).

MATLAB's algorithm, per axis:

* output length ``ceil(in_len * scale)``;
* output pixel ``x`` (1-based) maps to the input coordinate ``u = x / scale + 0.5 * (1 - 1 / scale)``;
* the bicubic kernel (Keys, a = -0.5) has width 4; when shrinking with antialiasing it is
  stretched to ``4 / scale`` and scaled by ``scale``;
* each output pixel takes ``ceil(width) + 2`` consecutive taps starting at ``floor(u - width / 2)``;
  the weights are normalised to sum 1, and tap columns that are zero for every output pixel are
  dropped;
* taps outside the image are mirrored symmetrically (the edge pixel repeated);
* height is resized first, then width.

Numerics: like BasicSR's port, everything is float32 and every output row (then column) is one
torch matrix-vector product of the weights with the window of the mirror-padded image. The padded
layout is the same as BasicSR's, so the BLAS kernels see the same operands and the result agrees
bit for bit with BasicSR's ``imresize`` on the same machine. This matters for NIQE, whose
grid-search feature fit turns float32 rounding differences of the half-size image into
differences of up to ~1e-3 in the score.
"""
import math

import numpy as np


def cubic(x):
    """The bicubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), elementwise, numpy."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return (near + far).astype(x.dtype, copy=False)


def calculate_weights_indices(in_length, out_length, scale, kernel_width=4, antialiasing=True):
    """Resampling weights for one axis.

    Returns:
        tuple: ``weights`` (out_length, taps) float32, and ``first`` (out_length,) int64: the 0-based
        input index of each row's first tap (may be negative or past the end: mirror-pad first).
        Row ``i`` reads the consecutive inputs ``first[i] .. first[i] + taps - 1``.
    """
    shrink_aa = scale < 1 and antialiasing
    if shrink_aa:
        kernel_width = kernel_width / scale
    f32 = np.float32
    x = np.arange(1, out_length + 1, dtype=f32)
    u = x / f32(scale) + f32(0.5 * (1 - 1 / scale))
    left = np.floor(u - f32(kernel_width / 2))
    taps = int(math.ceil(kernel_width)) + 2
    positions = left[:, None] + np.arange(taps, dtype=f32)[None, :]  # 1-based input positions
    dist = u[:, None] - positions
    if shrink_aa:
        weights = f32(scale) * cubic(dist * f32(scale))
    else:
        weights = cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Drop the tap columns that never contribute (only the outer ones can be all zero).
    used = np.flatnonzero(np.any(weights != 0, axis=0))
    lo, hi = int(used[0]), int(used[-1]) + 1
    weights = np.ascontiguousarray(weights[:, lo:hi], dtype=f32)
    first = left.astype(np.int64) + lo - 1  # 1-based -> 0-based
    return weights, first


def _mirror_index(n, start, stop):
    """Indices ``start .. stop-1`` folded into [0, n) by symmetric mirroring (-1 -> 0, n -> n-1)."""
    idx = np.mod(np.arange(start, stop), 2 * n)
    return np.where(idx >= n, 2 * n - 1 - idx, idx)


def _resize_dim(img, dim, out_length, scale, antialiasing):
    """Resize a float32 (C, H, W) torch tensor along ``dim`` (1: H, 2: W)."""
    import torch

    in_length = img.shape[dim]
    weights, first = calculate_weights_indices(in_length, out_length, scale, 4, antialiasing)
    taps = weights.shape[1]
    pad_before = max(0, -int(first.min()))
    pad_after = max(0, int(first.max()) + taps - in_length)
    rows = _mirror_index(in_length, -pad_before, in_length + pad_after)
    padded = img.index_select(dim, torch.from_numpy(rows).to(img.device)).contiguous()
    weights = torch.from_numpy(weights).to(img.device)
    starts = (first + pad_before).tolist()
    channels = img.shape[0]
    if dim == 1:
        out = img.new_empty(channels, out_length, img.shape[2])
        for i, s in enumerate(starts):
            for c in range(channels):
                out[c, i, :] = padded[c, s:s + taps, :].transpose(0, 1).mv(weights[i])
    else:
        out = img.new_empty(channels, img.shape[1], out_length)
        for i, s in enumerate(starts):
            for c in range(channels):
                out[c, :, i] = padded[c, :, s:s + taps].mv(weights[i])
    return out


def imresize(img, scale, antialiasing=True):
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Args:
        img: numpy (H, W, C) or (H, W), or torch (C, H, W) or (H, W). Values are used as they are
            (uint8 images are converted to float32, not rescaled).
        scale (float): the same factor for both axes.
        antialiasing (bool): widen the kernel when shrinking (MATLAB's default). Default True.

    Returns:
        float32 output of the same kind and layout (numpy or torch), not rounded nor clipped.
    """
    import torch

    if scale <= 0:
        raise ValueError(f'imresize: scale must be positive, got {scale}.')
    is_numpy = isinstance(img, np.ndarray)
    if is_numpy:
        if img.ndim not in (2, 3):
            raise ValueError(f'imresize: expected an (H, W) or (H, W, C) array, got shape {img.shape}.')
        two_d = img.ndim == 2
        arr = img[:, :, None] if two_d else img
        tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))
    elif isinstance(img, torch.Tensor):
        if img.dim() not in (2, 3):
            raise ValueError(f'imresize: expected a (C, H, W) or (H, W) tensor, got shape {tuple(img.shape)}.')
        two_d = img.dim() == 2
        tensor = (img[None] if two_d else img).to(torch.float32).contiguous()
    else:
        raise TypeError(f'imresize: expected a numpy array or a torch tensor, got {type(img).__name__}.')

    _, in_h, in_w = tensor.shape
    out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
    with torch.no_grad():
        out = _resize_dim(tensor, 1, out_h, scale, antialiasing)
        out = _resize_dim(out, 2, out_w, scale, antialiasing)

    if two_d:
        out = out[0]
    if is_numpy:
        out = out.numpy()
        return out if two_d else out.transpose(1, 2, 0)
    return out
