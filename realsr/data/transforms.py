"""Cropping and augmentation of GT/LQ pairs (BasicSR semantics).

Randomness comes from Python's ``random`` module, drawn in the same order as BasicSR, so the
engine's seeding (``random.seed`` per worker) controls it and a seeded run draws the same crops.
"""
import random

import numpy as np
import torch

from realsr.data.errors import DatasetValueError

__all__ = ['mod_crop', 'paired_random_crop', 'augment']


def mod_crop(img, scale):
    """Crop the bottom/right edge so that height and width are multiples of ``scale``.

    Args:
        img (ndarray): HW or HWC image.
        scale (int): the modulus.

    Returns:
        ndarray: a copy of the cropped image.
    """
    img = img.copy()
    if img.ndim not in (2, 3):
        raise ValueError(f'mod_crop expects an HW or HWC image, got shape {img.shape}')
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale, ...]


def _hw(img):
    return tuple(img.shape[-2:]) if torch.is_tensor(img) else tuple(img.shape[:2])


def paired_random_crop(img_gts, img_lqs, gt_patch_size, scale, gt_path=None):
    """Crop the same random region from GT and LQ images.

    The LQ patch is ``gt_patch_size // scale`` pixels wide; the GT patch is the matching
    ``scale``-times larger region. Works on HWC numpy arrays or (..., H, W) tensors.

    Args:
        img_gts (ndarray | Tensor | list): GT image(s).
        img_lqs (ndarray | Tensor | list): LQ image(s).
        gt_patch_size (int): GT patch size.
        scale (int): GT size / LQ size.
        gt_path (str, optional): named in error messages.

    Returns:
        (gt, lq): lists when lists were given with several items, otherwise single images.
    """
    if not isinstance(img_gts, list):
        img_gts = [img_gts]
    if not isinstance(img_lqs, list):
        img_lqs = [img_lqs]
    is_tensor = torch.is_tensor(img_gts[0])
    h_lq, w_lq = _hw(img_lqs[0])
    h_gt, w_gt = _hw(img_gts[0])
    lq_patch_size = gt_patch_size // scale
    where = f' ({gt_path})' if gt_path else ''

    if h_gt != h_lq * scale or w_gt != w_lq * scale:
        raise DatasetValueError(f'Scale mismatches: GT size ({h_gt}, {w_gt}) is not {scale}x the LQ size '
                                f'({h_lq}, {w_lq}); expected GT ({h_lq * scale}, {w_lq * scale}){where}.', gt_path)
    if h_lq < lq_patch_size or w_lq < lq_patch_size:
        raise DatasetValueError(f'LQ ({h_lq}, {w_lq}) is smaller than the patch size ({lq_patch_size}, '
                                f'{lq_patch_size}) (gt_size {gt_patch_size} / scale {scale}){where}. Remove the '
                                'image or lower gt_size.', gt_path)

    top = random.randint(0, h_lq - lq_patch_size)
    left = random.randint(0, w_lq - lq_patch_size)
    top_gt, left_gt = int(top * scale), int(left * scale)
    if is_tensor:
        img_lqs = [v[..., top:top + lq_patch_size, left:left + lq_patch_size] for v in img_lqs]
        img_gts = [v[..., top_gt:top_gt + gt_patch_size, left_gt:left_gt + gt_patch_size] for v in img_gts]
    else:
        img_lqs = [v[top:top + lq_patch_size, left:left + lq_patch_size, ...] for v in img_lqs]
        img_gts = [v[top_gt:top_gt + gt_patch_size, left_gt:left_gt + gt_patch_size, ...] for v in img_gts]
    if len(img_gts) == 1:
        img_gts = img_gts[0]
    if len(img_lqs) == 1:
        img_lqs = img_lqs[0]
    return img_gts, img_lqs


def _flip_rot(img, hflip, vflip, rot90):
    if torch.is_tensor(img):  # (..., H, W)
        if hflip:
            img = img.flip(-1)
        if vflip:
            img = img.flip(-2)
        if rot90:
            img = img.transpose(-2, -1)
        return img.contiguous()
    if hflip:
        img = img[:, ::-1, ...]
    if vflip:
        img = img[::-1, ...]
    if rot90:
        img = img.transpose(1, 0, 2) if img.ndim == 3 else img.T
    return np.ascontiguousarray(img)


def _flip_rot_flow(flow, hflip, vflip, rot90):
    """Optical flow (H, W, 2) follows the image, and its (dx, dy) components change with it."""
    flow = np.array(flow, copy=True)
    if hflip:
        flow = flow[:, ::-1, :].copy()
        flow[:, :, 0] *= -1
    if vflip:
        flow = flow[::-1, :, :].copy()
        flow[:, :, 1] *= -1
    if rot90:
        flow = flow.transpose(1, 0, 2)[:, :, [1, 0]]
    return np.ascontiguousarray(flow)


def augment(imgs, hflip=True, rotation=True, flows=None, return_status=False):
    """Random horizontal flip, vertical flip and 90-degree rotation (as a transpose), the same for all images.

    Each of the three is applied with probability 1/2; the vertical flip and the transpose only
    when ``rotation`` is true, giving the 8 dihedral transforms.

    Args:
        imgs (ndarray | list[ndarray]): HWC (or HW) images; tensors (..., H, W) are accepted too.
        hflip (bool): allow the horizontal flip.
        rotation (bool): allow the vertical flip and the transpose.
        flows (ndarray | list[ndarray], optional): (H, W, 2) flows to transform with the images.
        return_status (bool): also return ``(hflip, vflip, rot90)``.

    Returns:
        imgs [, flows] [, status]: lists if lists were given (with several items), else single arrays.
    """
    # The draws are made in BasicSR's order and short-circuit the same way.
    hflip = hflip and random.random() < 0.5
    vflip = rotation and random.random() < 0.5
    rot90 = rotation and random.random() < 0.5

    if not isinstance(imgs, list):
        imgs = [imgs]
    imgs = [_flip_rot(img, hflip, vflip, rot90) for img in imgs]
    if len(imgs) == 1:
        imgs = imgs[0]

    if flows is not None:
        if not isinstance(flows, list):
            flows = [flows]
        flows = [_flip_rot_flow(flow, hflip, vflip, rot90) for flow in flows]
        if len(flows) == 1:
            flows = flows[0]
        if return_status:
            return imgs, flows, (hflip, vflip, rot90)
        return imgs, flows
    if return_status:
        return imgs, (hflip, vflip, rot90)
    return imgs
