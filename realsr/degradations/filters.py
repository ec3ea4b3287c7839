"""Batched 2-D filtering with one shared kernel or one kernel per sample.

``filter2D`` follows BasicSR's ``filter2D``: reflect padding of ``k // 2`` on every side, then a
cross-correlation (the kernel is not flipped, as ``cv2.filter2D``). A per-sample kernel filters all
channels of its sample; it is applied as one grouped convolution over the whole batch.
"""
import torch
import torch.nn.functional as F

__all__ = ['filter2D', 'check_reflect_pad']


def check_reflect_pad(h, w, pad, what='filter2D'):
    """Raise ``ValueError`` unless an ``h x w`` image can be reflect-padded by ``pad`` pixels."""
    if pad >= h or pad >= w:
        raise ValueError(f'{what}: the image ({h}x{w}) is too small for reflect padding of {pad} pixels '
                         f'(a kernel of size {2 * pad + 1}); both sides must be larger than {pad}')


def filter2D(img, kernel):
    """Filter ``img`` (b, c, h, w) with ``kernel`` (b, k, k), (1, k, k) or (k, k); ``k`` must be odd.

    A kernel batch of 1 (or a 2-D kernel) is shared by every sample; a batch of ``b`` gives each
    sample its own kernel. The kernel is moved to the image's device and dtype. Returns a new
    (b, c, h, w) tensor; the inputs are not modified.
    """
    if not torch.is_tensor(img) or img.dim() != 4:
        raise ValueError(f'filter2D expects a (b, c, h, w) image tensor, got '
                         f'{tuple(img.shape) if torch.is_tensor(img) else type(img).__name__}')
    if not torch.is_tensor(kernel):
        kernel = torch.as_tensor(kernel)
    if kernel.dim() == 2:
        kernel = kernel.unsqueeze(0)
    if kernel.dim() != 3 or kernel.size(-1) != kernel.size(-2):
        raise ValueError(f'filter2D expects a square kernel of shape (b, k, k), (1, k, k) or (k, k), '
                         f'got {tuple(kernel.shape)}')
    k = kernel.size(-1)
    if k % 2 != 1:
        raise ValueError(f'filter2D needs an odd kernel size, got k={k}')
    b, c, h, w = img.shape
    if kernel.size(0) not in (1, b):
        raise ValueError(f'filter2D: the kernel batch ({kernel.size(0)}) must be 1 or the image batch ({b})')
    pad = k // 2
    check_reflect_pad(h, w, pad)
    kernel = kernel.to(device=img.device, dtype=img.dtype)
    padded = F.pad(img, (pad, pad, pad, pad), mode='reflect') if pad else img
    ph, pw = padded.shape[-2:]
    if kernel.size(0) == 1:
        out = F.conv2d(padded.reshape(b * c, 1, ph, pw), kernel.view(1, 1, k, k))
    else:
        weight = kernel.view(b, 1, k, k).repeat(1, c, 1, 1).view(b * c, 1, k, k)
        out = F.conv2d(padded.reshape(1, b * c, ph, pw), weight, groups=b * c)
    return out.view(b, c, h, w)
