"""Colour-space conversions (ITU-R BT.601 "studio swing", as MATLAB's rgb2ycbcr).

The numpy functions follow BasicSR's conventions:

* input is ``uint8`` in [0, 255] or ``float32`` in [0, 1]; anything else is a ``TypeError``;
* the computation is done in float64 on [0, 1] values, with the MATLAB coefficients that are
  defined for [0, 1] input and [16, 235] / [16, 240] output;
* output has the input's dtype: ``uint8`` results are rounded, ``float32`` results are scaled
  back to [0, 1] and are **not** rounded.

``y_only=True`` returns a 2-D (H, W) array holding only Y.
"""
import numpy as np

# Rows: output channel (Y, Cb, Cr); columns: input channel (R, G, B). Values for [0,1] input.
_RGB2YCBCR = np.array([
    [65.481, 128.553, 24.966],
    [-37.797, -74.203, 112.0],
    [112.0, -93.786, -18.214],
])
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])

# MATLAB's inverse (ycbcr2rgb), with its published rounded coefficients.
# Rows: output channel (R, G, B); columns: input channel (Y, Cb, Cr). RGB on a [0,255] scale is
# ``(coeffs @ ycbcr_255) * 255 + offset``.
_YCBCR2RGB = np.array([
    [0.00456621, 0.0, 0.00625893],
    [0.00456621, -0.00153632, -0.00318811],
    [0.00456621, 0.00791071, 0.0],
])
_YCBCR2RGB_OFFSET = np.array([-222.921, 135.576, -276.836])


def _to_unit_float(img):
    """uint8 [0,255] or float32 [0,1] -> float32 [0,1] (a copy)."""
    dtype = img.dtype
    if dtype == np.uint8:
        return img.astype(np.float32) / 255.
    if dtype == np.float32:
        return img.astype(np.float32)
    raise TypeError(f'The image dtype must be np.uint8 or np.float32, but got {dtype}.')


def _from_unit255(img, dtype):
    """Values on a [0,255] scale -> ``dtype`` (uint8: rounded; float32: divided by 255)."""
    if dtype == np.uint8:
        return np.round(img).astype(np.uint8)
    if dtype == np.float32:
        return (img / 255.).astype(np.float32)
    raise TypeError(f'The output dtype must be np.uint8 or np.float32, but got {dtype}.')


def _ycbcr_from(img, rgb_order, y_only):
    dtype = img.dtype
    x = _to_unit_float(img)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f'Expected an (H, W, 3) image, got shape {tuple(img.shape)}.')
    coeffs = _RGB2YCBCR[:, rgb_order]  # columns reordered to the input's channel order
    if y_only:
        out = np.dot(x, coeffs[0].tolist()) + 16.0
    else:
        out = np.matmul(x, coeffs.T.tolist()) + _YCBCR_OFFSET.tolist()
    return _from_unit255(out, dtype)


def rgb2ycbcr(img, y_only=False):
    """RGB (H, W, 3) -> YCbCr, or Y only (H, W). uint8 or float32 [0,1] in, same dtype out."""
    return _ycbcr_from(img, [0, 1, 2], y_only)


def bgr2ycbcr(img, y_only=False):
    """BGR (H, W, 3) -> YCbCr, or Y only (H, W). uint8 or float32 [0,1] in, same dtype out."""
    return _ycbcr_from(img, [2, 1, 0], y_only)


def _ycbcr_to(img, out_order):
    dtype = img.dtype
    x = _to_unit_float(img) * 255.
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f'Expected an (H, W, 3) YCbCr image, got shape {tuple(img.shape)}.')
    mat = _YCBCR2RGB[out_order]
    off = _YCBCR2RGB_OFFSET[out_order]
    out = np.matmul(x, mat.T.tolist()) * 255.0 + off.tolist()
    return _from_unit255(out, dtype)


def ycbcr2rgb(img):
    """YCbCr (H, W, 3) -> RGB. uint8 or float32 [0,1] in, same dtype out (not clipped)."""
    return _ycbcr_to(img, [0, 1, 2])


def ycbcr2bgr(img):
    """YCbCr (H, W, 3) -> BGR. uint8 or float32 [0,1] in, same dtype out (not clipped)."""
    return _ycbcr_to(img, [2, 1, 0])


def rgb2ycbcr_pt(img, y_only=False):
    """Torch RGB (N, 3, H, W) in [0,1] -> YCbCr (N, 3, H, W) or Y (N, 1, H, W) in [0,1].

    Computed in the input's dtype (float32 for images): ``(coeffs @ rgb + offset) / 255``.
    """
    import torch

    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f'rgb2ycbcr_pt needs an RGB tensor of shape (N, 3, H, W), got {tuple(img.shape)}'
                         + (' (a 1-channel image has no colour to convert; use test_y_channel=False)'
                            if img.dim() == 4 and img.shape[1] == 1 else '') + '.')
    rows = _RGB2YCBCR[:1] if y_only else _RGB2YCBCR
    weight = torch.tensor(rows.T.tolist()).to(img)  # (3, C_out): (..., 3) @ (3, C_out)
    bias = torch.tensor(_YCBCR_OFFSET[:rows.shape[0]].tolist()).view(1, -1, 1, 1).to(img)
    out = torch.matmul(img.permute(0, 2, 3, 1), weight).permute(0, 3, 1, 2) + bias
    return out / 255.
