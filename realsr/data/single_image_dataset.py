"""LQ images only, for inference (BasicSR's SingleImageDataset)."""
import os

from torch.utils import data

from realsr.data.data_util import paths_from_folder, paths_from_lmdb
from realsr.data.errors import DatasetFileNotFoundError, DatasetValueError, reading_item
from realsr.data.file_client import FileClient, io_backend_options
from realsr.data.paired_image_dataset import bgr_to_y, maybe_prepare_default_data, normalize_
from realsr.registry import DATASET_REGISTRY
from realsr.utils.img_util import img2tensor, imfrombytes


@DATASET_REGISTRY.register()
class SingleImageDataset(data.Dataset):
    """Read LQ images from a folder, a meta info file or an lmdb database.

    Options: ``dataroot_lq``, ``meta_info_file`` (first token per line: a path relative to
    ``dataroot_lq``), ``io_backend: {type: disk | lmdb}``, ``color`` (``'y'``), ``mean``/``std``.
    Items: ``{'lq', 'lq_path'}`` with a CHW float32 RGB tensor in [0, 1].
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.file_client = None
        self.io_backend_opt = io_backend_options(opt)
        self.mean = opt.get('mean')
        self.std = opt.get('std')
        self.lq_folder = opt.get('dataroot_lq')
        backend = self.io_backend_opt['type']
        if backend not in ('disk', 'lmdb'):
            FileClient(backend)  # raises the clear 'not supported' error now, not in a worker

        if backend == 'lmdb':
            self.io_backend_opt['db_paths'] = [self.lq_folder]
            self.io_backend_opt['client_keys'] = ['lq']
            self.paths = paths_from_lmdb(self.lq_folder)
        elif opt.get('meta_info_file') is not None:
            meta_file = opt['meta_info_file']
            if not os.path.isfile(meta_file):
                raise DatasetFileNotFoundError(f"The meta_info_file '{meta_file}' does not exist.", meta_file)
            with open(meta_file, 'r', encoding='utf-8') as f:
                names = [line.strip().split(' ')[0] for line in f if line.strip()]
            self.paths = [os.path.join(self.lq_folder, name) for name in names]
        else:
            if backend == 'disk':
                maybe_prepare_default_data(self.lq_folder)
            if self.lq_folder is None:
                raise DatasetValueError('SingleImageDataset needs dataroot_lq.')
            self.paths = paths_from_folder(self.lq_folder)

    def __getitem__(self, index):
        if self.file_client is None:
            self.file_client = FileClient.from_options(self.io_backend_opt)
        lq_path = self.paths[index]
        with reading_item():
            img_lq = imfrombytes(self.file_client.get(lq_path, 'lq'), float32=True, path=lq_path)
        if self.opt.get('color') == 'y':
            img_lq = bgr_to_y(img_lq)
        img_lq = img2tensor(img_lq, bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            normalize_(img_lq, self.mean if self.mean is not None else 0.0, self.std if self.std is not None else 1.0)
        return {'lq': img_lq, 'lq_path': lq_path}

    def __len__(self):
        return len(self.paths)
