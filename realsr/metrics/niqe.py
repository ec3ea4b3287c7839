"""NIQE (Natural Image Quality Evaluator), a no-reference metric; lower is better.

Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality Analyzer", 2013.
The numerics follow the MATLAB release as ported by BasicSR (so the values agree with BasicSR's
``calculate_niqe``, e.g. 5.7296 for Set14/baboon):

* the image is turned into float32 luminance (Y of BT.601, or OpenCV gray), cropped and rounded;
* it is cut to whole 96x96 blocks; two scales are used, the second being a MATLAB bicubic
  half-size resize (antialiased) of the first, with 48x48 blocks;
* per scale: MSCN coefficients with a 7x7 Gaussian window (scipy ``convolve``, 'nearest' border),
  then 18 features per block from asymmetric generalised Gaussian (AGGD) fits of the block and
  of its products with 4 circularly shifted copies;
* the multivariate Gaussian of the block features is compared with the pristine model that ships
  with this module (``niqe_pris_params.npz``).
"""
import os
import warnings

import cv2
import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma

from realsr.metrics.metric_util import reorder_image, to_y_channel
from realsr.registry import METRIC_REGISTRY
from realsr.utils.matlab_functions import imresize

BLOCK_SIZE = 96
_PARAMS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'niqe_pris_params.npz')
_cache = {}


def load_pristine_params():
    """(mu_pris_param (1, 36), cov_pris_param (36, 36), gaussian_window (7, 7)), float64."""
    if 'params' not in _cache:
        with np.load(_PARAMS_FILE) as data:
            _cache['params'] = (data['mu_pris_param'], data['cov_pris_param'], data['gaussian_window'])
    return _cache['params']


def _shape_grid():
    """The AGGD shape grid 0.2:0.001:10 and the ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) on it."""
    if 'grid' not in _cache:
        alphas = np.arange(0.2, 10.001, 0.001)
        ratios = gamma(2 / alphas)**2 / (gamma(1 / alphas) * gamma(3 / alphas))
        _cache['grid'] = (alphas, ratios)
    return _cache['grid']


def estimate_aggd_param(block):
    """Moment-matching fit of an asymmetric generalised Gaussian to the values of ``block``.

    Returns:
        tuple: (alpha, beta_left, beta_right): the shape and the left/right scales. The scales are
        NaN when the block has no negative (or no positive) value.
    """
    alphas, ratios = _shape_grid()
    x = block.ravel()
    sigma_left = np.sqrt(np.mean(x[x < 0]**2))
    sigma_right = np.sqrt(np.mean(x[x > 0]**2))
    gamma_hat = sigma_left / sigma_right
    r_hat = np.mean(np.abs(x))**2 / np.mean(x**2)
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / ((gamma_hat**2 + 1)**2)
    alpha = alphas[np.argmin((ratios - r_hat_norm)**2)]
    spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, sigma_left * spread, sigma_right * spread


_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # horizontal, vertical, main and secondary diagonals


def compute_feature(block):
    """The 18 NIQE features of one block of MSCN coefficients."""
    alpha, beta_l, beta_r = estimate_aggd_param(block)
    feat = [alpha, (beta_l + beta_r) / 2]
    for shift in _SHIFTS:
        products = block * np.roll(block, shift, axis=(0, 1))
        alpha, beta_l, beta_r = estimate_aggd_param(products)
        mean = (beta_r - beta_l) * (gamma(2 / alpha) / gamma(1 / alpha))
        feat.extend([alpha, mean, beta_l, beta_r])
    return feat


def _mscn(img, window):
    """Mean-subtracted, contrast-normalised coefficients (in the image's dtype)."""
    mu = convolve(img, window, mode='nearest')
    sigma = np.sqrt(np.abs(convolve(np.square(img), window, mode='nearest') - np.square(mu)))
    return (img - mu) / (sigma + 1)


def _min_size_error(h, w, what):
    return ValueError(
        f'NIQE needs at least two {BLOCK_SIZE}x{BLOCK_SIZE} blocks, but {what} is {h}x{w} pixels (HxW), '
        f'which holds {h // BLOCK_SIZE}x{w // BLOCK_SIZE} block(s). The minimum size is '
        f'{BLOCK_SIZE}x{2 * BLOCK_SIZE} or {2 * BLOCK_SIZE}x{BLOCK_SIZE} pixels (after crop_border).')


def niqe(img, mu_pris_param, cov_pris_param, gaussian_window, block_size_h=BLOCK_SIZE, block_size_w=BLOCK_SIZE):
    """NIQE of a 2-D luminance image in [0, 255] (already cropped and rounded).

    Raises:
        ValueError: if the image holds fewer than two whole blocks, or if fewer than two blocks give
            finite features (e.g. flat blocks), where a covariance cannot be estimated.
    """
    if img.ndim != 2:
        raise ValueError(f'niqe() expects a 2-D (H, W) image, got shape {img.shape}.')
    h, w = img.shape
    num_block_h, num_block_w = h // block_size_h, w // block_size_w
    if num_block_h * num_block_w < 2:
        raise _min_size_error(h, w, 'the image')
    img = img[:num_block_h * block_size_h, :num_block_w * block_size_w]

    scale_features = []
    with np.errstate(divide='ignore', invalid='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # empty halves of flat blocks give NaN
        for scale in (1, 2):
            mscn = _mscn(img, gaussian_window)
            bh, bw = block_size_h // scale, block_size_w // scale
            feats = []
            for bx in range(num_block_w):  # column-major block order
                for by in range(num_block_h):
                    feats.append(compute_feature(mscn[by * bh:(by + 1) * bh, bx * bw:(bx + 1) * bw]))
            scale_features.append(np.array(feats))
            if scale == 1:
                img = imresize(img / 255., scale=0.5, antialiasing=True) * 255.

        features = np.concatenate(scale_features, axis=1)
        mu_dist = np.nanmean(features, axis=0)
    finite = features[~np.isnan(features).any(axis=1)]
    if finite.shape[0] < 2:
        raise ValueError(f'NIQE: only {finite.shape[0]} of the {features.shape[0]} blocks of this {h}x{w} image '
                         'have finite features (flat blocks have none); at least 2 are needed.')
    cov_dist = np.cov(finite, rowvar=False)
    inv_cov = np.linalg.pinv((cov_pris_param + cov_dist) / 2)
    diff = mu_pris_param - mu_dist
    quality = np.matmul(np.matmul(diff, inv_cov), np.transpose(diff))
    return float(np.squeeze(np.sqrt(quality)))


@METRIC_REGISTRY.register()
def calculate_niqe(img, crop_border, input_order='HWC', convert_to='y', **kwargs):
    """NIQE of an image in [0, 255] (BGR for colour images). Lower is better.

    Args:
        img (ndarray): (H, W, C) image, (C, H, W) with ``input_order='CHW'``, or (H, W) (with any
            order, or ``input_order='HW'``).
        crop_border (int): pixels cropped from each edge.
        input_order (str): 'HWC', 'CHW' or 'HW'. Default 'HWC'.
        convert_to (str): 'y' (BT.601 luma) or 'gray' (OpenCV BGR2GRAY) for colour images.
        **kwargs: ignored (so ``img2`` can be passed like to the full-reference metrics).

    Returns:
        float: the NIQE score.

    Raises:
        ValueError: for an image smaller than two 96x96 blocks after cropping (the message gives the
            size and the minimum), an unknown ``convert_to`` or ``input_order``.
    """
    mu_pris_param, cov_pris_param, gaussian_window = load_pristine_params()
    img = np.asarray(img).astype(np.float32)
    if input_order != 'HW':
        img = reorder_image(img, input_order=input_order)
        if convert_to not in ('y', 'gray'):
            raise ValueError(f"Unknown convert_to {convert_to!r}: supported values are 'y' and 'gray'.")
        if img.shape[2] == 3:
            if convert_to == 'y':
                img = to_y_channel(img)
            else:
                img = cv2.cvtColor(img / 255., cv2.COLOR_BGR2GRAY) * 255.
        elif img.shape[2] != 1:
            raise ValueError(f'NIQE expects a 1- or 3-channel image, got {img.shape[2]} channels.')
        img = np.squeeze(img, axis=2) if img.ndim == 3 else img
    elif img.ndim != 2:
        raise ValueError(f"input_order 'HW' needs a 2-D image, got shape {img.shape}.")
    h0, w0 = img.shape
    if crop_border != 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    img = img.round()
    h, w = img.shape
    if (h // BLOCK_SIZE) * (w // BLOCK_SIZE) < 2:
        what = f'the image ({h0}x{w0} before crop_border={crop_border})' if crop_border else 'the image'
        raise _min_size_error(h, w, what)
    return niqe(img, mu_pris_param, cov_pris_param, gaussian_window)
