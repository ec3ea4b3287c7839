"""Writing image folders into lmdb databases in BasicSR's format.

A database is a folder ``<name>.lmdb`` holding ``data.mdb``, ``lock.mdb`` and ``meta_info.txt``.
Each value is a PNG-encoded image; its key is the file name without extension (the relative path
without extension for recursive scans). ``meta_info.txt`` has one line per image,
``<key>.png (h,w,c) <compress_level>``, which is what ``io_backend: {type: lmdb}`` reads.

The database is written into a temporary folder beside the target and renamed into place at the
end, so an interrupted run never leaves a half-written ``.lmdb`` that looks complete.
"""
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor

import cv2

from realsr.data.data_util import IMG_EXTENSIONS, paired_paths_from_folder, scandir
from realsr.data.file_client import close_lmdb_env
from realsr.utils.img_util import ImageReadError, imfrombytes

__all__ = ['make_lmdb_from_imgs', 'make_lmdb_from_folder', 'make_paired_lmdb']

_MIN_MAP_SIZE = 64 * 1024 ** 2


def _encode(path, compress_level):
    with open(path, 'rb') as f:
        content = f.read()
    img = imfrombytes(content, flag='unchanged', path=path)
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)])
    if not ok:
        raise ImageReadError(f"Cannot re-encode '{path}' as PNG (shape {img.shape}, dtype {img.dtype}).", path)
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    return buf.tobytes(), (h, w, c)


def make_lmdb_from_imgs(data_path, lmdb_path, img_path_list, keys, batch=1000, compress_level=1, n_thread=None,
                        overwrite=False, progress=True, desc=None):
    """Write the given images (paths relative to ``data_path``) into ``lmdb_path`` under ``keys``.

    Args:
        data_path (str): folder the ``img_path_list`` entries are relative to.
        lmdb_path (str): output folder; must end with '.lmdb'.
        img_path_list (list[str]): image paths relative to ``data_path``.
        keys (list[str]): one key per image (ASCII without spaces is the portable choice).
        batch (int): images per write transaction.
        compress_level (int): PNG compression level (0-9) of the stored values.
        n_thread (int, optional): reading/encoding threads (default: the CPU count, at most 16).
        overwrite (bool): replace an existing ``lmdb_path``.
        progress (bool): show a tqdm progress bar.

    Returns:
        dict: ``{'lmdb_path', 'num_images', 'bytes'}``.
    """
    import lmdb

    lmdb_path = os.fspath(lmdb_path).rstrip('/\\')
    if not lmdb_path.endswith('.lmdb'):
        raise ValueError(f"The lmdb output '{lmdb_path}' must end with '.lmdb'.")
    if len(img_path_list) != len(keys):
        raise ValueError(f'img_path_list ({len(img_path_list)}) and keys ({len(keys)}) differ in length.')
    if not img_path_list:
        raise ValueError(f"No images to write into '{lmdb_path}' (from '{data_path}').")
    seen = {}
    for key, rel in zip(keys, img_path_list):
        if key in seen:
            raise ValueError(f"Two images get the same lmdb key {key!r}: '{seen[key]}' and '{rel}' in '{data_path}'.")
        if not key or ' ' in key:
            raise ValueError(f"Invalid lmdb key {key!r} for '{rel}': keys must be non-empty and contain no spaces "
                             '(meta_info.txt is space-separated).')
        seen[key] = rel
    if os.path.exists(lmdb_path) and not overwrite:
        raise FileExistsError(f"'{lmdb_path}' already exists; delete it or pass overwrite=True (--overwrite).")
    parent = os.path.dirname(os.path.abspath(lmdb_path))
    os.makedirs(parent, exist_ok=True)
    tmp_path = os.path.join(parent, f'.{os.path.basename(lmdb_path)}.tmp-{uuid.uuid4().hex[:8]}')
    n_thread = n_thread or min(16, os.cpu_count() or 1)
    total_bytes = 0

    pbar = None
    if progress:
        from tqdm import tqdm
        pbar = tqdm(total=len(keys), unit='img', desc=desc or os.path.basename(lmdb_path))
    try:
        env = lmdb.open(tmp_path, map_size=_MIN_MAP_SIZE)
        meta_lines = []
        with ThreadPoolExecutor(max_workers=n_thread) as pool:
            for start in range(0, len(keys), batch):
                chunk_keys = keys[start:start + batch]
                chunk_paths = [os.path.join(data_path, p) for p in img_path_list[start:start + batch]]
                encoded = []
                # cv2 releases the GIL while decoding/encoding, so threads scale.
                for key, (value, (h, w, c)) in zip(chunk_keys,
                                                    pool.map(lambda p: _encode(p, compress_level), chunk_paths)):
                    encoded.append((key, value))
                    meta_lines.append(f'{key}.png ({h},{w},{c}) {compress_level}\n')
                    if pbar is not None:
                        pbar.update(1)
                chunk_bytes = sum(len(v) for _, v in encoded)
                total_bytes += chunk_bytes
                # Grow the map ahead of the write (it is sparse on Linux/macOS, preallocated on Windows).
                needed = int((total_bytes + 4096 * len(meta_lines)) * 1.5) + _MIN_MAP_SIZE
                if env.info()['map_size'] < needed:
                    env.set_mapsize(needed * 2)
                with env.begin(write=True) as txn:
                    for key, value in encoded:
                        txn.put(key.encode('utf-8'), value)
        env.sync()
        env.close()
        with open(os.path.join(tmp_path, 'meta_info.txt'), 'w', encoding='utf-8') as f:
            f.writelines(meta_lines)
        if os.path.exists(lmdb_path):  # overwrite
            close_lmdb_env(lmdb_path)  # a reader in this process must not keep the old file mapped
            shutil.rmtree(lmdb_path)
        os.replace(tmp_path, lmdb_path)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise
    finally:
        if pbar is not None:
            pbar.close()
    return {'lmdb_path': lmdb_path, 'num_images': len(keys), 'bytes': total_bytes}


def _key_of(rel_path):
    return os.path.splitext(rel_path)[0].replace(os.sep, '/')


def make_lmdb_from_folder(folder, lmdb_path, compress_level=1, n_thread=None, batch=1000, recursive=False,
                          overwrite=False, progress=True):
    """Write every image of ``folder`` into ``lmdb_path`` (keys: file names without extension)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Input folder '{folder}' does not exist.")
    rel_paths = [p for p in scandir(folder, recursive=recursive) if p.lower().endswith(IMG_EXTENSIONS)]
    if not rel_paths:
        raise ValueError(f"The folder '{folder}' contains no images.")
    keys = [_key_of(p) for p in rel_paths]
    return make_lmdb_from_imgs(folder, lmdb_path, rel_paths, keys, batch=batch, compress_level=compress_level,
                               n_thread=n_thread, overwrite=overwrite, progress=progress)


def make_paired_lmdb(gt_folder, lq_folder, gt_lmdb_path, lq_lmdb_path, filename_tmpl='{}', compress_level=1,
                     n_thread=None, batch=1000, overwrite=False, progress=True):
    """Write a GT folder and its LQ folder into two lmdb databases with identical keys.

    The LQ of ``baby.png`` is found as ``filename_tmpl.format('baby') + '.png'`` (e.g. ``'{}x4'``); both
    are stored under the key ``baby``, which is what ``PairedImageDataset`` with lmdb expects.
    """
    pairs = paired_paths_from_folder([lq_folder, gt_folder], ['lq', 'gt'], filename_tmpl)
    gt_rel = [os.path.basename(p['gt_path']) for p in pairs]
    lq_rel = [os.path.basename(p['lq_path']) for p in pairs]
    keys = [os.path.splitext(n)[0] for n in gt_rel]
    for out in (gt_lmdb_path, lq_lmdb_path):
        if os.path.exists(out) and not overwrite:
            raise FileExistsError(f"'{out}' already exists; delete it or pass overwrite=True (--overwrite).")
    gt_info = make_lmdb_from_imgs(gt_folder, gt_lmdb_path, gt_rel, keys, batch=batch, compress_level=compress_level,
                                  n_thread=n_thread, overwrite=overwrite, progress=progress, desc='GT')
    lq_info = make_lmdb_from_imgs(lq_folder, lq_lmdb_path, lq_rel, keys, batch=batch, compress_level=compress_level,
                                  n_thread=n_thread, overwrite=overwrite, progress=progress, desc='LQ')
    return {'gt': gt_info, 'lq': lq_info}
