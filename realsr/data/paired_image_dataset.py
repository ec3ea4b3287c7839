"""GT/LQ image pairs read from folders, a meta info file or lmdb (BasicSR's PairedImageDataset)."""
import logging
import os
import random

import numpy as np
from torch.utils import data

from realsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb, paired_paths_from_meta_info_file
from realsr.data.errors import DatasetValueError, reading_item
from realsr import option_defs as defs
from realsr.data.file_client import FileClient, io_backend_options
from realsr.data.transforms import augment, paired_random_crop
from realsr.registry import DATASET_REGISTRY
from realsr.utils.img_util import ImageReadError, img2tensor, imfrombytes

logger = logging.getLogger('realsr')

# How many other samples a dataset with skip_bad_images tries before giving up.
_MAX_SKIP_TRIES = 50


def bgr_to_y(img):
    """Y channel (ITU-R BT.601, MATLAB rgb2ycbcr) of a BGR float32 [0, 1] image, kept in [0, 1], as (H, W, 1)."""
    try:
        from realsr.utils.color_util import bgr2ycbcr
    except ImportError:
        bgr2ycbcr = None
    if bgr2ycbcr is not None:
        y = bgr2ycbcr(img, y_only=True)
    else:
        y = (img.astype(np.float32) @ np.array([24.966, 128.553, 65.481], np.float32) + 16.0) / 255.0
    return np.asarray(y, dtype=np.float32)[..., None]


def normalize_(tensor, mean, std):
    """In-place ``(x - mean[c]) / std[c]`` on a CHW tensor (mean/std: one value or one per channel)."""
    c = tensor.shape[0]
    mean = [float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean] * c)]
    std = [float(s) for s in (std if isinstance(std, (list, tuple)) else [std] * c)]
    if len(mean) != c or len(std) != c:
        raise ValueError(f'mean/std need {c} values (one per channel), got mean={mean} std={std}')
    mean_t = tensor.new_tensor(mean).view(-1, 1, 1)
    std_t = tensor.new_tensor(std).view(-1, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


def _ratio_hint(h_gt, w_gt, h_lq, w_lq, scale):
    if h_lq and w_lq and h_gt % h_lq == 0 and w_gt % w_lq == 0 and h_gt // h_lq == w_gt // w_lq \
            and h_gt // h_lq != scale:
        return f' The files look like a x{h_gt // h_lq} pair: is `scale: {scale}` right?'
    return ''


def maybe_prepare_default_data(*folders):
    """Build the embedded default dataset if a dataroot points into it and it is missing."""
    from realsr.data.default_data import DEFAULT_DATA_NAME, ensure_default_data
    for folder in folders:
        if folder is not None and not os.path.exists(folder) and \
                DEFAULT_DATA_NAME in os.path.normpath(os.fspath(folder)).split(os.sep):
            ensure_default_data(folder)


@DATASET_REGISTRY.register()
class PairedImageDataset(data.Dataset):
    """Paired GT/LQ images for supervised SR training and validation.

    Options (BasicSR keys): ``dataroot_gt``, ``dataroot_lq``, ``meta_info_file``, ``filename_tmpl``
    (default ``'{}'``), ``io_backend: {type: disk | lmdb}``, ``gt_size``, ``use_hflip``, ``use_rot``,
    ``color`` (``'y'``: Y channel only), ``mean``/``std``, ``phase``, ``scale``. realsr extension:
    ``skip_bad_images`` (default false): replace an unreadable pair by a random other one, with a
    warning naming the file, instead of raising.

    Training: random GT/LQ crop, then flips/rotation. Other phases: the GT is cropped (top-left) to
    LQ size x scale. Items: ``{'lq', 'gt', 'lq_path', 'gt_path'}``, CHW float32 RGB tensors in [0, 1].
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.file_client = None
        self.io_backend_opt = io_backend_options(opt)
        self.mean = opt.get('mean')
        self.std = opt.get('std')
        self.gt_folder = opt.get('dataroot_gt')
        self.lq_folder = opt.get('dataroot_lq')
        self.filename_tmpl = defs.value(opt, defs.PAIRED_DATASET, 'filename_tmpl')
        self.skip_bad_images = bool(defs.value(opt, defs.LOADER, 'skip_bad_images'))
        self.use_hflip = defs.value(opt, defs.PAIRED_DATASET, 'use_hflip')
        self.use_rot = defs.value(opt, defs.PAIRED_DATASET, 'use_rot')
        self.scale = int(defs.value(opt, defs.LOADER, 'scale'))
        backend = self.io_backend_opt['type']
        if backend not in ('disk', 'lmdb'):
            FileClient(backend)  # raises the clear 'not supported' error now, not in a worker
        if opt.get('phase') == 'train' and opt.get('gt_size') is None:
            raise ValueError(f"PairedImageDataset '{opt.get('name', '')}': gt_size (the GT patch size) is required "
                             'for the train phase.')

        if backend == 'lmdb':
            self.io_backend_opt['db_paths'] = [self.lq_folder, self.gt_folder]
            self.io_backend_opt['client_keys'] = ['lq', 'gt']
            self.paths = paired_paths_from_lmdb([self.lq_folder, self.gt_folder], ['lq', 'gt'])
        else:
            if backend == 'disk':
                maybe_prepare_default_data(self.gt_folder, self.lq_folder)
            self.paths = self._paths_from_list(opt)
            if self.paths is None and opt.get('meta_info_file') is not None:
                self.paths = paired_paths_from_meta_info_file([self.lq_folder, self.gt_folder], ['lq', 'gt'],
                                                              opt['meta_info_file'], self.filename_tmpl)
            elif self.paths is None:
                self.paths = paired_paths_from_folder([self.lq_folder, self.gt_folder], ['lq', 'gt'],
                                                      self.filename_tmpl)

    def _paths_from_list(self, opt):
        """The pairs a subclass reads from its own list file (disk backend), or None to find them as BasicSR
        does (``meta_info_file`` or a folder scan), which needs images directly in the two folders."""
        return None

    def _file_client(self):
        if self.file_client is None:
            self.file_client = FileClient.from_options(self.io_backend_opt)
        return self.file_client

    def _load(self, index):
        scale = self.scale
        client = self._file_client()
        gt_path = self.paths[index]['gt_path']
        lq_path = self.paths[index]['lq_path']
        img_gt = imfrombytes(client.get(gt_path, 'gt'), float32=True, path=gt_path)
        img_lq = imfrombytes(client.get(lq_path, 'lq'), float32=True, path=lq_path)

        h_gt, w_gt = img_gt.shape[:2]
        h_lq, w_lq = img_lq.shape[:2]
        train = self.opt.get('phase') == 'train'
        # Training needs an exact match; at other phases a GT larger than LQ x scale is cropped.
        bad = (h_gt != h_lq * scale or w_gt != w_lq * scale) if train else \
            (h_gt < h_lq * scale or w_gt < w_lq * scale)
        if bad:
            raise DatasetValueError(
                f"Size mismatch: GT '{gt_path}' is {h_gt}x{w_gt} (h x w) but LQ '{lq_path}' is {h_lq}x{w_lq} "
                f'and scale is {scale}, so the GT should be {h_lq * scale}x{w_lq * scale}.'
                + _ratio_hint(h_gt, w_gt, h_lq, w_lq, scale), gt_path)

        if train:
            gt_size = self.opt['gt_size']
            img_gt, img_lq = paired_random_crop(img_gt, img_lq, gt_size, scale, gt_path)
            img_gt, img_lq = augment([img_gt, img_lq], self.use_hflip, self.use_rot)

        if self.opt.get('color') == 'y':
            img_gt = bgr_to_y(img_gt)
            img_lq = bgr_to_y(img_lq)

        if not train:
            img_gt = img_gt[0:img_lq.shape[0] * scale, 0:img_lq.shape[1] * scale, :]

        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            mean = self.mean if self.mean is not None else 0.0
            std = self.std if self.std is not None else 1.0
            normalize_(img_lq, mean, std)
            normalize_(img_gt, mean, std)
        return {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path}

    def __getitem__(self, index):
        if not self.skip_bad_images:
            with reading_item():
                return self._load(index)
        bad = set()
        for _ in range(_MAX_SKIP_TRIES):
            try:
                return self._load(index)
            except (ImageReadError, FileNotFoundError) as err:
                pair = self.paths[index]
                logger.warning('Skipping an unreadable training pair (skip_bad_images is on): GT %s, LQ %s: %s',
                               pair['gt_path'], pair['lq_path'], err)
                bad.add(index)
                if len(bad) >= len(self.paths):
                    break
                # Another random pair (python's random, seeded per worker), not one already found bad.
                index = random.randint(0, len(self.paths) - 1)
                while index in bad:
                    index = random.randint(0, len(self.paths) - 1)
        raise DatasetValueError(f'{len(bad)} pairs in a row could not be read from the dataset '
                                f"'{self.gt_folder}' (skip_bad_images is on): too many bad images; see the warnings.",
                                self.gt_folder)

    def __len__(self):
        return len(self.paths)
