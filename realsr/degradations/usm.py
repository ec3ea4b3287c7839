"""Unsharp masking (USM), as used to sharpen Real-ESRGAN's ground truth.

With ``G`` the Gaussian blur (``radius`` bumped to odd, OpenCV's default sigma rule when
``sigma <= 0``: 51 taps, sigma 8 at the defaults) and reflect padding::

    residual = img - G(img)
    mask     = (|residual| * 255 > threshold)          # as the image's float dtype
    soft     = G(mask)
    out      = soft * clip(img + weight * residual, 0, 1) + (1 - soft) * img

``USMSharp`` applies the 2-D Gaussian as two 1-D passes (it is an outer product), which equals the
2-D 51x51 convolution of the reference to float rounding (~1e-7) at a fraction of the cost.
``usm_sharp`` is the numpy/OpenCV twin for HWC images.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .filters import check_reflect_pad

__all__ = ['gaussian_kernel_1d', 'USMSharp', 'usm_sharp', 'separable_filter2D']

# getGaussianKernel uses fixed tables instead of the formula for ksize <= this when sigma <= 0.
_OPENCV_SMALL_GAUSSIAN_MAX = 9


def _odd_size(radius):
    radius = int(radius)
    if radius < 1:
        raise ValueError(f'USM radius must be >= 1, got {radius}')
    return radius + 1 if radius % 2 == 0 else radius


def gaussian_kernel_1d(ksize, sigma=0):
    """The normalised 1-D Gaussian that ``cv2.getGaussianKernel(ksize, sigma)`` returns, as float64 (k,).

    ``sigma <= 0`` selects OpenCV's rule ``sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8``; for such small
    sizes (ksize <= 9) OpenCV returns fixed tables instead, which are taken from OpenCV itself.
    """
    if ksize < 1 or ksize % 2 != 1:
        raise ValueError(f'gaussian_kernel_1d needs a positive odd ksize, got {ksize}')
    if sigma <= 0 and ksize <= _OPENCV_SMALL_GAUSSIAN_MAX:
        import cv2

        return cv2.getGaussianKernel(ksize, 0, ktype=cv2.CV_64F)[:, 0].astype(np.float64)
    if sigma <= 0:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) * 0.5
    g = np.exp((-0.5 / (sigma * sigma)) * x * x)
    return g / g.sum()


def separable_filter2D(img, kernel_1d):
    """Filter (b, c, h, w) with the outer product of ``kernel_1d`` (k,) with itself, reflect-padded.

    Equal to ``filter2D(img, outer(kernel_1d, kernel_1d))`` up to float rounding.
    """
    k = kernel_1d.numel()
    pad = k // 2
    b, c, h, w = img.shape
    check_reflect_pad(h, w, pad, 'USM')
    kernel_1d = kernel_1d.to(device=img.device, dtype=img.dtype)
    x = F.pad(img, (pad, pad, pad, pad), mode='reflect').reshape(b * c, 1, h + 2 * pad, w + 2 * pad)
    x = F.conv2d(x, kernel_1d.view(1, 1, k, 1))  # vertical pass: (b*c, 1, h, w + 2 pad)
    x = F.conv2d(x, kernel_1d.view(1, 1, 1, k))  # horizontal pass
    return x.view(b, c, h, w)


class USMSharp(nn.Module):
    """Unsharp masking for (b, c, h, w) tensors in [0, 1] (any float dtype, any device).

    Args:
        radius: Gaussian size (an even value is bumped to the next odd one). Default 50 -> 51.
        sigma: Gaussian sigma; 0 uses OpenCV's rule (8.0 for 51 taps).

    The 1-D kernel is the float32 buffer ``kernel`` (moves with ``.to(device)``; not saved in the
    state dict). ``kernel_2d`` gives the equivalent (1, k, k) 2-D kernel.
    """

    def __init__(self, radius=50, sigma=0):
        super().__init__()
        ksize = _odd_size(radius)
        self.register_buffer('kernel', torch.from_numpy(gaussian_kernel_1d(ksize, sigma)).float(), persistent=False)

    @property
    def kernel_2d(self):
        return torch.outer(self.kernel, self.kernel).unsqueeze(0)

    def forward(self, img, weight=0.5, threshold=10):
        if not torch.is_tensor(img) or img.dim() != 4:
            raise ValueError(f'USMSharp expects a (b, c, h, w) tensor, got '
                             f'{tuple(img.shape) if torch.is_tensor(img) else type(img).__name__}')
        blur = separable_filter2D(img, self.kernel)
        residual = img - blur
        mask = (torch.abs(residual) * 255 > threshold).to(img.dtype)
        soft_mask = separable_filter2D(mask, self.kernel)
        sharp = torch.clamp(img + weight * residual, 0, 1)
        return soft_mask * sharp + (1 - soft_mask) * img


def usm_sharp(img, weight=0.5, radius=50, threshold=10):
    """Unsharp masking of a numpy HWC (or HW) float image in [0, 1] with ``cv2.GaussianBlur``.

    Same formula as :class:`USMSharp` (BORDER_REFLECT_101 = torch's 'reflect'). Returns a new array.
    """
    import cv2

    ksize = _odd_size(radius)
    blur = cv2.GaussianBlur(img, (ksize, ksize), 0)
    residual = img - blur
    mask = (np.abs(residual) * 255 > threshold).astype(np.float32)
    soft_mask = cv2.GaussianBlur(mask, (ksize, ksize), 0)
    sharp = np.clip(img + weight * residual, 0, 1)
    return soft_mask * sharp + (1 - soft_mask) * img

