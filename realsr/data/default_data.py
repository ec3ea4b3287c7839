"""The embedded default dataset: real photographs shipped inside scikit-image, as an SR dataset.

scikit-image installs a few public-domain / CC0 photographs in its package folder
(``skimage/data``). ``prepare_default_data(root)`` turns them into a small paired dataset, with
no download::

    root/
      README.txt                 where the photos come from and how they were processed
      manifest.json              written last: its presence marks a complete dataset
      train/HR/<name>.png        3-channel BGR PNGs, sizes multiples of lcm(scales)
      train/LR_bicubic/X2/<name>.png   MATLAB-style bicubic downscaling (same file names as HR,
      train/LR_bicubic/X4/<name>.png   so filename_tmpl '{}' pairs them)
      val/HR/<name>.png
      val/LR_bicubic/X{s}/<name>.png

Large photos are first reduced (cv2.INTER_AREA) so that their long side is at most ``max_side``.
The dataset is built in a temporary folder beside ``root`` and renamed into place, so an
interrupted preparation never leaves a half-written dataset behind.
"""
import json
import logging
import math
import os
import shutil
import time
import uuid
from functools import reduce

import cv2
import numpy as np

logger = logging.getLogger('realsr')

__all__ = ['DEFAULT_DATA_NAME', 'PHOTOS', 'DEFAULT_VAL_NAMES', 'skimage_data_dir', 'prepare_default_data',
           'is_default_data_complete', 'ensure_default_data']

DEFAULT_DATA_NAME = 'skimage_photos'
MANIFEST = 'manifest.json'
FORMAT_VERSION = 1

# name -> (file in skimage/data, short description and the source/licence that scikit-image states)
PHOTOS = {
    'astronaut': ('astronaut.png', 'portrait of astronaut Eileen Collins; NASA, public domain'),
    'chelsea': ('chelsea.png', 'Chelsea the cat; CC0, photographer Stefan van der Walt'),
    'coffee': ('coffee.png', 'coffee cup on wood; CC0, photographer Rachel Michetti'),
    'rocket': ('rocket.jpg', 'Falcon 9 / DSCOVR launch; SpaceX, public domain'),
    'motorcycle_left': ('motorcycle_left.png', 'Middlebury 2014 stereo benchmark, left view'),
    'motorcycle_right': ('motorcycle_right.png', 'Middlebury 2014 stereo benchmark, right view'),
    'hubble_deep_field': ('hubble_deep_field.jpg', 'Hubble eXtreme Deep Field; NASA, public domain'),
    'retina': ('retina.jpg', 'fundus photograph of a retina; CC0 (Wikimedia Commons, M. Haggstrom)'),
    'ihc': ('ihc.png', 'immunohistochemistry micrograph of colonic glands; no known copyright restrictions'),
    'camera': ('camera.png', 'grayscale photographer with camera; CC0, photographer Lav Varshney'),
    'coins': ('coins.png', 'grayscale Greek coins from Pompeii; Brooklyn Museum, no known copyright restrictions'),
    'brick': ('brick.png', 'grayscale brick wall texture; CC0 (CC0Textures)'),
    'grass': ('grass.png', 'grayscale grass texture; CC0'),
    'gravel': ('gravel.png', 'grayscale gravel texture; CC0 (CC0Textures)'),
}
DEFAULT_VAL_NAMES = ('chelsea', 'coffee')
DEFAULT_SCALES = (2, 4)
DEFAULT_MAX_SIDE = 512


def skimage_data_dir():
    """The folder of the installed scikit-image's bundled data files (nothing is downloaded)."""
    try:
        import skimage
    except ImportError as err:
        raise ImportError('The default dataset is made from the photographs bundled with scikit-image; '
                          'install it with `pip install scikit-image`.') from err
    return os.path.join(os.path.dirname(os.path.abspath(skimage.__file__)), 'data')


def _lcm(values):
    return reduce(lambda a, b: a * b // math.gcd(a, b), values, 1)


def _downscale(img, scale):
    """HR uint8 -> LR uint8 with MATLAB's bicubic imresize if available, else cv2.INTER_AREA."""
    try:
        from realsr.utils.matlab_functions import imresize
    except ImportError:
        imresize = None
    if imresize is not None:
        out = imresize(img.astype(np.float32), 1.0 / scale)
        method = 'MATLAB-style bicubic (realsr.utils.matlab_functions.imresize, antialiasing)'
        return np.clip(np.round(out), 0, 255).astype(np.uint8), method
    h, w = img.shape[:2]
    return cv2.resize(img, (w // scale, h // scale), interpolation=cv2.INTER_AREA), 'cv2.INTER_AREA'


def _write_png(img, path):
    from realsr.utils.img_util import imwrite
    imwrite(img, path)


def _readme(info):
    lines = [
        'realsr default dataset "skimage_photos"',
        '',
        'Real photographs bundled with the scikit-image package (read from the installed copy of',
        f"skimage/data; scikit-image {info['skimage_version']}; nothing was downloaded), prepared by",
        'realsr.data.default_data.prepare_default_data for quick training runs. For each photo\'s',
        'origin and licence see the docstring of the matching skimage.data function.',
        '',
        'Processing:',
        '- read with OpenCV as 3-channel BGR (grayscale photos get three equal channels);',
        f"- photos with a long side above {info['max_side']} px were reduced with cv2.INTER_AREA so that",
        f"  the long side is {info['max_side']} px;",
        f"- cropped at the bottom/right to a multiple of {info['modulus']} (lcm of the scales);",
        f"- LR images: {info['downscale_method']}, rounded to uint8.",
        '',
        'Layout: {train,val}/HR/<name>.png and {train,val}/LR_bicubic/X<s>/<name>.png (same names,',
        "so filename_tmpl '{}').",
        '',
        'Photos (name: HR height x width; description):',
    ]
    for split in ('train', 'val'):
        lines.append(f'[{split}]')
        for name in info[split]:
            h, w = info['hr_sizes'][name]
            lines.append(f'  {name}: {h}x{w}; {PHOTOS[name][1]}')
    if info['absent']:
        lines.append(f"Absent from this scikit-image installation (skipped): {', '.join(info['absent'])}")
    return '\n'.join(lines) + '\n'


def _read_manifest(root):
    try:
        with open(os.path.join(root, MANIFEST), 'r', encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _manifest_complete(root, info):
    if info is None or info.get('format_version') != FORMAT_VERSION:
        return False
    return all(os.path.isfile(os.path.join(root, rel)) for rel in info.get('files', []))


def is_default_data_complete(root, scales=None, val_names=None):
    """True if ``root`` holds a complete prepared dataset (with the given scales and val photos, if given)."""
    info = _read_manifest(root)
    if not _manifest_complete(root, info):
        return False
    if scales is not None and not set(int(s) for s in scales) <= set(info['scales']):
        return False
    if val_names is not None and list(val_names) != info['val']:
        return False
    return True


def _result(root, info, prepared):
    root = os.path.abspath(root)
    res = {
        'root': root,
        'prepared': prepared,
        'scales': list(info['scales']),
        'train': list(info['train']),
        'val': list(info['val']),
        'hr_sizes': {k: tuple(v) for k, v in info['hr_sizes'].items()},
        'downscale_method': info['downscale_method'],
        'absent': list(info['absent']),
    }
    for split in ('train', 'val'):
        res[f'{split}_hr'] = os.path.join(root, split, 'HR')
        res[f'{split}_lr'] = {s: os.path.join(root, split, 'LR_bicubic', f'X{s}') for s in info['scales']}
    return res


def _remove_stale_temps(parent, name, max_age_s=6 * 3600):
    """Remove temporary folders left by preparations that were killed (older than ``max_age_s``)."""
    prefixes = (f'.{name}.tmp-', f'.{name}.old-')
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefixes) and entry.is_dir():
            try:
                if time.time() - entry.stat().st_mtime > max_age_s:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                pass


def _build(tmp, scales, val_names, max_side, photos):
    src_dir = skimage_data_dir()
    modulus = _lcm(scales)
    names = list(photos) if photos is not None else list(PHOTOS)
    unknown = [n for n in list(names) + list(val_names) if n not in PHOTOS]
    if unknown:
        raise ValueError(f"Unknown default-data photo name(s) {unknown}; choose from {', '.join(PHOTOS)}.")
    absent, present = [], []
    for name in names:
        (present if os.path.isfile(os.path.join(src_dir, PHOTOS[name][0])) else absent).append(name)
    if absent:
        logger.warning('Default dataset: %s not found in %s; skipped.', ', '.join(absent), src_dir)
    val = [n for n in present if n in val_names]
    train = [n for n in present if n not in val_names]
    if not train or not val:
        raise RuntimeError(f'Default dataset: too few photos found in {src_dir} (train: {train}, val: {val}); '
                           'is scikit-image installed completely?')

    import skimage
    info = {
        'format_version': FORMAT_VERSION, 'name': DEFAULT_DATA_NAME, 'source': src_dir,
        'skimage_version': getattr(skimage, '__version__', 'unknown'), 'scales': sorted(set(scales)),
        'modulus': modulus, 'max_side': max_side, 'train': train, 'val': val, 'absent': absent,
        'hr_sizes': {}, 'files': [], 'downscale_method': None,
    }
    for split, split_names in (('train', train), ('val', val)):
        for name in split_names:
            path = os.path.join(src_dir, PHOTOS[name][0])
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise OSError(f"Default dataset: cannot read '{path}' (a corrupt scikit-image installation?)")
            h, w = img.shape[:2]
            if max(h, w) > max_side:
                ratio = max_side / max(h, w)
                img = cv2.resize(img, (max(1, round(w * ratio)), max(1, round(h * ratio))),
                                 interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
            img = img[:h - h % modulus, :w - w % modulus]
            rel = os.path.join(split, 'HR', f'{name}.png')
            _write_png(img, os.path.join(tmp, rel))
            info['files'].append(rel)
            info['hr_sizes'][name] = list(img.shape[:2])
            for s in info['scales']:
                lr, method = _downscale(img, s)
                if lr.shape[:2] != (img.shape[0] // s, img.shape[1] // s):
                    raise RuntimeError(f'Default dataset: LR size {lr.shape[:2]} of {name} is not HR size '
                                       f'{img.shape[:2]} / {s}.')
                info['downscale_method'] = method
                rel = os.path.join(split, 'LR_bicubic', f'X{s}', f'{name}.png')
                _write_png(lr, os.path.join(tmp, rel))
                info['files'].append(rel)
    with open(os.path.join(tmp, 'README.txt'), 'w', encoding='utf-8') as f:
        f.write(_readme(info))
    info['files'].append('README.txt')
    # The manifest is the completeness marker: written last.
    with open(os.path.join(tmp, MANIFEST), 'w', encoding='utf-8') as f:
        json.dump(info, f, indent=1)
    return info


def prepare_default_data(root, scales=DEFAULT_SCALES, val_names=DEFAULT_VAL_NAMES, overwrite=False,
                         max_side=DEFAULT_MAX_SIDE, photos=None):
    """Build the default dataset at ``root`` (no download; see the module docstring for the layout).

    Args:
        root (str): dataset folder, conventionally ``.../skimage_photos``.
        scales (tuple[int]): LR scales to make; HR sizes are multiples of their lcm.
        val_names (tuple[str]): photos kept for validation; all the others are training photos.
        overwrite (bool): rebuild even if a complete dataset is there (it is replaced atomically).
        max_side (int): long-side cap applied to the HR photos (cv2.INTER_AREA).
        photos (list[str], optional): restrict to these photo names (default: all of ``PHOTOS``).

    Returns:
        dict: ``root``, ``prepared`` (False if a complete dataset was already there), ``scales``,
        ``train``/``val`` (photo names), ``train_hr``/``val_hr`` (folders), ``train_lr``/``val_lr``
        (``{scale: folder}``), ``hr_sizes`` (``{name: (h, w)}``), ``downscale_method``, ``absent``.

    Raises:
        FileExistsError: ``root`` exists but is not a complete dataset of this kind (it is left
            untouched; remove it or pass ``overwrite=True``).
    """
    scales = tuple(sorted(set(int(s) for s in scales)))
    if not scales or min(scales) < 1:
        raise ValueError(f'scales must be positive integers, got {scales}')
    val_names = tuple(val_names)
    root = os.path.abspath(os.fspath(root))
    parent, base = os.path.dirname(root), os.path.basename(root)

    if os.path.isdir(root) and not os.listdir(root):
        os.rmdir(root)  # an empty folder (e.g. made by hand) is simply filled
    if os.path.exists(root) and not overwrite:
        if is_default_data_complete(root, scales, val_names):
            return _result(root, _read_manifest(root), prepared=False)
        why = ' (it was prepared with other settings, or files are missing)' if _read_manifest(root) else ''
        raise FileExistsError(
            f"'{root}' exists but is not a complete default dataset with scales {list(scales)} and validation "
            f'photos {list(val_names)}{why}. Remove it, or call prepare_default_data(..., overwrite=True).')

    os.makedirs(parent, exist_ok=True)
    _remove_stale_temps(parent, base)
    tmp = os.path.join(parent, f'.{base}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}')
    logger.info('Preparing the default dataset %s from the photos bundled with scikit-image ...', root)
    try:
        os.makedirs(tmp)
        info = _build(tmp, scales, val_names, max_side, photos)
        if os.path.exists(root):
            if not overwrite and is_default_data_complete(root, scales, val_names):
                # Another process finished first: keep its copy.
                shutil.rmtree(tmp, ignore_errors=True)
                return _result(root, _read_manifest(root), prepared=False)
            old = os.path.join(parent, f'.{base}.old-{uuid.uuid4().hex[:8]}')
            os.rename(root, old)
            os.rename(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, root)
            except OSError:
                # A concurrent preparation renamed its copy in first.
                if is_default_data_complete(root, scales, val_names):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return _result(root, _read_manifest(root), prepared=False)
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info('Default dataset ready: %d training and %d validation photos in %s', len(info['train']),
                len(info['val']), root)
    return _result(root, info, prepared=True)


def ensure_default_data(path):
    """Prepare the default dataset if ``path`` points into it and it is missing.

    ``path`` is any path with a component equal to ``DEFAULT_DATA_NAME`` (e.g.
    ``datasets/skimage_photos/train/LR_bicubic/X4``); the dataset root is that component. A scale
    named in the path (``X3``) is added to the default scales.

    Returns:
        bool: True if something was prepared, False if it was already there or ``path`` is not a
        default-dataset path.
    """
    parts = os.path.normpath(os.path.abspath(os.fspath(path))).split(os.sep)
    if DEFAULT_DATA_NAME not in parts:
        return False
    idx = len(parts) - 1 - parts[::-1].index(DEFAULT_DATA_NAME)
    root = os.sep.join(parts[:idx + 1]) or os.sep
    scales = set(DEFAULT_SCALES)
    for part in parts[idx + 1:]:
        if len(part) > 1 and part[0] in 'xX' and part[1:].isdigit() and int(part[1:]) >= 1:
            scales.add(int(part[1:]))
    if is_default_data_complete(root, scales):
        return False
    # Our own dataset prepared with fewer scales may be rebuilt; a foreign folder is never touched.
    info = _read_manifest(root)
    overwrite = info is not None and info.get('name') == DEFAULT_DATA_NAME
    val_names = tuple(info['val']) if overwrite and info.get('val') else DEFAULT_VAL_NAMES
    if overwrite:
        scales |= set(info.get('scales', []))
    res = prepare_default_data(root, scales=tuple(sorted(scales)), val_names=val_names, overwrite=overwrite)
    return res['prepared']
