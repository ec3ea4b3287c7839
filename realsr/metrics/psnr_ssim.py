"""PSNR and SSIM with BasicSR's numerics.

Numpy versions: images in [0, 255] (uint8 or float), BGR, (H, W, C), (C, H, W) with
``input_order='CHW'``, or (H, W). Torch versions: (N, C, H, W) RGB tensors in [0, 1]; they return
one value per image as a float64 tensor of shape (N,).
"""
import cv2
import numpy as np

from realsr.metrics.metric_util import reorder_image, to_y_channel
from realsr.registry import METRIC_REGISTRY

_SSIM_C1 = (0.01 * 255)**2
_SSIM_C2 = (0.03 * 255)**2


def _check_same_shape(img, img2):
    if tuple(img.shape) != tuple(img2.shape):
        raise ValueError(f'Image shapes are different: {tuple(img.shape)} (img) vs {tuple(img2.shape)} (img2).')


def _crop(img, crop_border):
    """Crop ``crop_border`` pixels from each side of the two leading (spatial) axes."""
    if crop_border == 0:
        return img
    return img[crop_border:-crop_border, crop_border:-crop_border, ...]


def _prepare(img, img2, crop_border, input_order, test_y_channel):
    _check_same_shape(img, img2)
    img = _crop(reorder_image(img, input_order=input_order), crop_border)
    img2 = _crop(reorder_image(img2, input_order=input_order), crop_border)
    if test_y_channel:
        img, img2 = to_y_channel(img), to_y_channel(img2)
    return img.astype(np.float64), img2.astype(np.float64)


def _gaussian_window():
    """11x11 Gaussian window, sigma 1.5, summing to 1 (outer product of OpenCV's 1-D kernel)."""
    k = cv2.getGaussianKernel(11, 1.5)
    return np.outer(k, k)


@METRIC_REGISTRY.register()
def calculate_psnr(img, img2, crop_border, input_order='HWC', test_y_channel=False, **kwargs):
    """PSNR (dB) between two images in [0, 255].

    Args:
        img, img2 (ndarray): images of the same shape, [0, 255].
        crop_border (int): pixels cropped from each edge before the comparison.
        input_order (str): 'HWC' or 'CHW'. Default 'HWC'.
        test_y_channel (bool): compare the Y channel (BT.601) of BGR images. Default False.

    Returns:
        float: ``10 * log10(255^2 / MSE)`` with the MSE over all pixels and channels; inf if equal.
    """
    img, img2 = _prepare(img, img2, crop_border, input_order, test_y_channel)
    mse = np.mean((img - img2)**2)
    if mse == 0:
        return float('inf')
    return float(10. * np.log10(255. * 255. / mse))


def _ssim_channel(img, img2):
    """SSIM of two float64 single-channel images in [0, 255] (MATLAB's ssim, 'valid' filtering)."""
    window = _gaussian_window()

    def blur(x):  # filter, then keep only the pixels whose window lies inside the image
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

    mu1, mu2 = blur(img), blur(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = blur(img**2) - mu1_sq
    sigma2_sq = blur(img2**2) - mu2_sq
    sigma12 = blur(img * img2) - mu1_mu2
    num = (2 * mu1_mu2 + _SSIM_C1) * (2 * sigma12 + _SSIM_C2)
    den = (mu1_sq + mu2_sq + _SSIM_C1) * (sigma1_sq + sigma2_sq + _SSIM_C2)
    return (num / den).mean()


@METRIC_REGISTRY.register()
def calculate_ssim(img, img2, crop_border, input_order='HWC', test_y_channel=False, **kwargs):
    """SSIM between two images in [0, 255], computed per channel and averaged.

    Same arguments as :func:`calculate_psnr`. Uses an 11x11 Gaussian window (sigma 1.5),
    C1 = (0.01*255)^2, C2 = (0.03*255)^2, float64 arithmetic.

    Returns:
        float: the mean SSIM.
    """
    img, img2 = _prepare(img, img2, crop_border, input_order, test_y_channel)
    if min(img.shape[:2]) < 11:
        raise ValueError(f'SSIM needs images of at least 11x11 pixels after cropping, got {img.shape[:2]}.')
    values = [_ssim_channel(img[..., c], img2[..., c]) for c in range(img.shape[2])]
    return float(np.array(values).mean())


# ----------------------------------------------------------------------------------------------
# torch versions
# ----------------------------------------------------------------------------------------------
def _prepare_pt(img, img2, crop_border, test_y_channel):
    from realsr.utils.color_util import rgb2ycbcr_pt

    _check_same_shape(img, img2)
    if img.dim() != 4:
        raise ValueError(f'Expected (N, C, H, W) tensors, got shape {tuple(img.shape)}.')
    if crop_border != 0:
        img = img[:, :, crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[:, :, crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        img = rgb2ycbcr_pt(img, y_only=True)
        img2 = rgb2ycbcr_pt(img2, y_only=True)
    return img, img2


@METRIC_REGISTRY.register()
def calculate_psnr_pt(img, img2, crop_border, test_y_channel=False, **kwargs):
    """PSNR (dB) per image of two (N, C, H, W) tensors in [0, 1] (RGB when ``test_y_channel``).

    Returns:
        Tensor: float64, shape (N,): ``10 * log10(1 / (MSE + 1e-8))``.
    """
    import torch

    img, img2 = _prepare_pt(img, img2, crop_border, test_y_channel)
    img = img.to(torch.float64)
    img2 = img2.to(torch.float64)
    mse = torch.mean((img - img2)**2, dim=[1, 2, 3])
    return 10. * torch.log10(1. / (mse + 1e-8))


@METRIC_REGISTRY.register()
def calculate_ssim_pt(img, img2, crop_border, test_y_channel=False, **kwargs):
    """SSIM per image of two (N, C, H, W) tensors in [0, 1] (RGB when ``test_y_channel``).

    The same window and constants as :func:`calculate_ssim`, on x255 values in float64, with
    'valid' Gaussian filtering; the per-channel maps are averaged.

    Returns:
        Tensor: float64, shape (N,).
    """
    import torch

    img, img2 = _prepare_pt(img, img2, crop_border, test_y_channel)
    img = img.to(torch.float64) * 255.
    img2 = img2.to(torch.float64) * 255.
    if min(img.shape[2:]) < 11:
        raise ValueError(f'SSIM needs images of at least 11x11 pixels after cropping, got {tuple(img.shape[2:])}.')
    # The window is the outer product of a 1-D Gaussian, so the 'valid' 2-D filtering is done as
    # two 1-D passes of shifted, weighted sums: the same values up to float64 rounding, and much
    # faster than a float64 11x11 depthwise conv2d on CPU.
    taps = cv2.getGaussianKernel(11, 1.5).ravel().tolist()

    def blur_1d(x, dim):
        n = x.shape[dim] - 10
        out = x.narrow(dim, 0, n) * taps[0]
        for i in range(1, 11):
            out = out + x.narrow(dim, i, n) * taps[i]
        return out

    def blur(x):
        return blur_1d(blur_1d(x, 2), 3)

    mu1, mu2 = blur(img), blur(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = blur(img * img) - mu1_sq
    sigma2_sq = blur(img2 * img2) - mu2_sq
    sigma12 = blur(img * img2) - mu1_mu2
    luminance = (2 * mu1_mu2 + _SSIM_C1) / (mu1_sq + mu2_sq + _SSIM_C1)
    contrast_structure = (2 * sigma12 + _SSIM_C2) / (sigma1_sq + sigma2_sq + _SSIM_C2)
    return (luminance * contrast_structure).mean(dim=[1, 2, 3])
