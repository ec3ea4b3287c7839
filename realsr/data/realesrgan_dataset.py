"""GT-only dataset for on-the-fly degradation (Real-ESRGAN's ``RealESRGANDataset``).

It reads a GT image, flips/rotates it, crops or pads it to ``crop_pad_size`` (the reference's
hard-coded 400) and nothing else: the blur kernels, noise and compression are synthesised
batched on the model's device (:mod:`realsr.degradations.pipeline`), configured by the kernel
keys of this dataset's section (``kernel_list``, ``blur_sigma``, ...). Paths come from
``meta_info`` (one relative path per line, first token), an lmdb folder, or - our addition -
a scan of ``dataroot_gt``.
"""
import logging
import os
import random

import cv2
from torch.utils import data

from realsr.data.data_util import paths_from_folder, paths_from_lmdb
from realsr.data.errors import DatasetFileNotFoundError, DatasetValueError, reading_item
from realsr import option_defs as defs
from realsr.data.file_client import FileClient, io_backend_options
from realsr.data.paired_image_dataset import PairedImageDataset
from realsr.data.transforms import augment
from realsr.registry import DATASET_REGISTRY
from realsr.utils.img_util import ImageReadError, img2tensor, imfrombytes

logger = logging.getLogger('realsr')

_MAX_SKIP_TRIES = 50


def read_meta_info_paths(meta_info, root):
    if not os.path.isfile(meta_info):
        raise DatasetFileNotFoundError(f"meta_info file '{meta_info}' does not exist", meta_info)
    with open(meta_info, encoding='utf-8') as f:
        names = [line.strip().split(' ')[0] for line in f if line.strip()]
    if not names:
        raise DatasetValueError(f"meta_info file '{meta_info}' lists no image", meta_info)
    return [os.path.join(root, name) for name in names]


def crop_or_pad(img, size):
    """Pad (reflect-101, bottom/right) to at least ``size`` x ``size``, then take a random
    ``size`` x ``size`` crop (python ``random``, as the reference)."""
    h, w = img.shape[:2]
    if h < size or w < size:
        img = cv2.copyMakeBorder(img, 0, max(0, size - h), 0, max(0, size - w), cv2.BORDER_REFLECT_101)
    h, w = img.shape[:2]
    if h > size or w > size:
        top = random.randint(0, h - size)
        left = random.randint(0, w - size)
        img = img[top:top + size, left:left + size, ...]
    return img


@DATASET_REGISTRY.register()
class RealESRGANDataset(data.Dataset):
    """Items: ``{'gt': (3, S, S) RGB float tensor in [0, 1], 'gt_path': str}`` with
    S = ``crop_pad_size`` (default 400)."""

    def __init__(self, opt):
        self.opt = opt
        self.file_client = None
        self.io_backend_opt = io_backend_options(opt)
        self.gt_folder = opt['dataroot_gt']
        self.crop_pad_size = int(defs.value(opt, defs.REALESRGAN_DATASET, 'crop_pad_size'))
        self.skip_bad_images = bool(defs.value(opt, defs.LOADER, 'skip_bad_images'))
        self.use_hflip = defs.value(opt, defs.REALESRGAN_DATASET, 'use_hflip')
        self.use_rot = defs.value(opt, defs.REALESRGAN_DATASET, 'use_rot')
        if self.io_backend_opt['type'] == 'lmdb':
            if not str(self.gt_folder).endswith('.lmdb'):
                raise ValueError(f"dataroot_gt must end with '.lmdb' for the lmdb backend, got '{self.gt_folder}'")
            self.io_backend_opt['db_paths'] = [self.gt_folder]
            self.io_backend_opt['client_keys'] = ['gt']
            self.paths = paths_from_lmdb(self.gt_folder)
        elif (opt.get('meta_info') or opt.get('meta_info_file')) is not None:
            self.paths = read_meta_info_paths(opt.get('meta_info') or opt['meta_info_file'], self.gt_folder)
        else:
            self.paths = paths_from_folder(self.gt_folder)

    def _load(self, index):
        if self.file_client is None:
            self.file_client = FileClient.from_options(self.io_backend_opt)
        gt_path = self.paths[index]
        img_gt = imfrombytes(self.file_client.get(gt_path, 'gt'), float32=True, path=gt_path)
        img_gt = augment(img_gt, self.use_hflip, self.use_rot)
        img_gt = crop_or_pad(img_gt, self.crop_pad_size)
        return {'gt': img2tensor(img_gt, bgr2rgb=True, float32=True), 'gt_path': gt_path}

    def __getitem__(self, index):
        if not self.skip_bad_images:
            with reading_item():
                return self._load(index)
        for _ in range(_MAX_SKIP_TRIES):
            try:
                return self._load(index)
            except (ImageReadError, FileNotFoundError) as err:
                logger.warning('Skipping an unreadable GT image (skip_bad_images is on): %s: %s', self.paths[index], err)
                index = random.randint(0, len(self.paths) - 1)
        raise DatasetValueError(f"{_MAX_SKIP_TRIES} GT images in a row could not be read from '{self.gt_folder}' "
                                '(skip_bad_images is on): too many bad images; see the warnings.', self.gt_folder)

    def __len__(self):
        return len(self.paths)


@DATASET_REGISTRY.register()
class DASRDataset(RealESRGANDataset):
    """DASR's / CDDNet's training dataset name. DASR's dataset also draws the kernels of its three
    degradation spaces; here, as for Real-ESRGAN, it only reads GT crops and the suffixed kernel
    keys (``kernel_list_weak1``, ``blur_sigma_standard1``, ...) configure the on-device synthesis
    (:mod:`realsr.degradations.dasr_spaces`)."""


@DATASET_REGISTRY.register()
class RealESRGANPairedDataset(PairedImageDataset):
    """Paired data for fine-tuning with ``high_order_degradation: false``. As
    ``PairedImageDataset``, except that ``meta_info`` lists ``gt/path.png, lq/path.png`` per line
    (paths relative to ``dataroot_gt`` and ``dataroot_lq``), as in Real-ESRGAN."""

    def _paths_from_list(self, opt):
        # Read before any folder scan: Real-ESRGAN's layout points both dataroots at a parent folder
        # (datasets/DF2K) that holds no image itself.
        if opt.get('meta_info') is None:
            return None
        paths = []
        with open(opt['meta_info'], encoding='utf-8') as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                parts = [p.strip() for p in line.strip().split(', ')]
                if len(parts) != 2:
                    raise ValueError(f"meta_info '{opt['meta_info']}' line {number}: expected 'gt_path, lq_path', "
                                     f'got {line.strip()!r}')
                paths.append({'gt_path': os.path.join(self.gt_folder, parts[0]),
                              'lq_path': os.path.join(self.lq_folder, parts[1])})
        return paths
