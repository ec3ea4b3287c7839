"""Finding the image files (or lmdb keys) of a dataset, with BasicSR's three discovery modes.

* folder scan: every image in the GT folder, its LQ file named ``filename_tmpl.format(stem) + ext``;
* ``meta_info_file``: the first space-separated token of each line is a GT path relative to the GT folder;
* lmdb: the keys listed in ``<db>.lmdb/meta_info.txt`` (both databases must list the same keys).

Every error names the folder, file or key at fault.
"""
import os
import re

from realsr.data.errors import DatasetFileNotFoundError, DatasetValueError

__all__ = [
    'IMG_EXTENSIONS', 'scandir', 'read_lmdb_meta_info', 'paired_paths_from_folder',
    'paired_paths_from_meta_info_file', 'paired_paths_from_lmdb', 'paths_from_folder', 'paths_from_lmdb'
]

# Extensions (lower case) that the folder scans treat as images; other files (README, .txt,
# Thumbs.db ...) are ignored.
IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pbm', '.pnm',
                  '.jp2', '.exr', '.hdr', '.pfm', '.ras', '.sr', '.avif')

_META_LINE = re.compile(r'^(?P<name>.+?)\s+\(\s*\d+\s*,\s*\d+\s*(?:,\s*\d+\s*)?\)(?:\s+\d+)?\s*$')


def _is_image(name):
    return name.lower().endswith(IMG_EXTENSIONS)


def scandir(dir_path, suffix=None, recursive=False, full_path=False):
    """List the files in a folder, sorted; hidden files (names starting with '.') are skipped.

    Args:
        dir_path (str): the folder.
        suffix (str | tuple[str], optional): keep only names ending with it.
        recursive (bool): descend into sub-folders (hidden ones are skipped).
        full_path (bool): return ``dir_path/...`` paths instead of paths relative to ``dir_path``.

    Returns:
        list[str]: sorted paths.
    """
    if suffix is not None and not isinstance(suffix, (str, tuple)):
        raise TypeError(f'scandir: suffix must be a string or a tuple of strings, got {type(suffix).__name__}')
    dir_path = os.fspath(dir_path)
    if not os.path.isdir(dir_path):
        raise DatasetFileNotFoundError(f"Folder not found: '{dir_path}'", dir_path)
    found = []

    def _scan(folder):
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith('.'):
                    continue
                if entry.is_file():
                    if suffix is None or entry.name.endswith(suffix):
                        path = entry.path if full_path else os.path.relpath(entry.path, dir_path)
                        found.append(path)
                elif recursive and entry.is_dir():
                    _scan(entry.path)

    _scan(dir_path)
    return sorted(found)


def _check_folder(folder, key, option=None):
    option = option or f'dataroot_{key}'
    if folder is None:
        raise DatasetValueError(f'The {key} folder is not set ({option} is missing or null in the options).')
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        what = 'is a file, not a folder' if os.path.exists(folder) else 'does not exist'
        raise DatasetFileNotFoundError(f"The {key} folder '{folder}' {what}. Check {option} in the options.", folder)
    return folder


def _check_two(folders, keys):
    if len(folders) != 2 or len(keys) != 2:
        raise ValueError(f'Expected two folders and two keys ([lq, gt]), got folders={folders} keys={keys}.')
    return list(folders), list(keys)


def paired_paths_from_folder(folders, keys, filename_tmpl):
    """Pair each image of the GT folder with its LQ file.

    Args:
        folders (list[str]): ``[lq_folder, gt_folder]``.
        keys (list[str]): ``['lq', 'gt']``.
        filename_tmpl (str): LQ name template, e.g. ``'{}x4'``: the LQ of ``baby.png`` is ``babyx4.png``.

    Returns:
        list[dict]: ``{'lq_path': ..., 'gt_path': ...}`` in sorted GT order.
    """
    (input_folder, gt_folder), (input_key, gt_key) = _check_two(folders, keys)
    input_folder = _check_folder(input_folder, input_key)
    gt_folder = _check_folder(gt_folder, gt_key)
    gt_names = [n for n in scandir(gt_folder) if _is_image(n)]
    if not gt_names:
        raise DatasetValueError(f"The {gt_key} folder '{gt_folder}' contains no images "
                                f"(looked for {', '.join(IMG_EXTENSIONS[:5])}, ...).", gt_folder)
    input_names = set(n for n in scandir(input_folder) if _is_image(n))
    if not input_names:
        raise DatasetValueError(f"The {input_key} folder '{input_folder}' contains no images.", input_folder)

    paths, missing = [], []
    for gt_name in gt_names:
        stem, ext = os.path.splitext(gt_name)
        input_name = f'{filename_tmpl.format(stem)}{ext}'
        if input_name not in input_names:
            missing.append((gt_name, input_name))
            continue
        paths.append({
            f'{input_key}_path': os.path.join(input_folder, input_name),
            f'{gt_key}_path': os.path.join(gt_folder, gt_name),
        })
    if missing:
        gt_name, input_name = missing[0]
        example = sorted(input_names)[0]
        more = ''
        if len(missing) > 1:
            more = f' ({len(missing)} of {len(gt_names)} {gt_key} images have no {input_key} file)'
        raise DatasetFileNotFoundError(
            f"No {input_key} file for {gt_key} image '{os.path.join(gt_folder, gt_name)}': expected "
            f"'{os.path.join(input_folder, input_name)}' (filename_tmpl {filename_tmpl!r}){more}. "
            f"The {input_key} folder holds names like '{example}': set filename_tmpl so that "
            f"filename_tmpl.format(<{gt_key} name without extension>) + extension gives them.",
            os.path.join(gt_folder, gt_name))
    return paths


def _read_meta_lines(meta_file, what):
    meta_file = os.fspath(meta_file)
    if not os.path.isfile(meta_file):
        raise DatasetFileNotFoundError(f"The {what} '{meta_file}' does not exist.", meta_file)
    with open(meta_file, 'r', encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    lines = [line for line in lines if line]
    if not lines:
        raise DatasetValueError(f"The {what} '{meta_file}' is empty.", meta_file)
    return lines


def paired_paths_from_meta_info_file(folders, keys, meta_info_file, filename_tmpl):
    """Pair the GT images listed in a meta info file (first token of each line) with their LQ files.

    The GT path is ``gt_folder/<token>``; the LQ path is ``lq_folder/filename_tmpl.format(stem) + ext``
    built from the token's base name (as BasicSR does).
    """
    (input_folder, gt_folder), (input_key, gt_key) = _check_two(folders, keys)
    input_folder = _check_folder(input_folder, input_key)
    gt_folder = _check_folder(gt_folder, gt_key)
    lines = _read_meta_lines(meta_info_file, 'meta_info_file')
    paths = []
    for line in lines:
        gt_name = line.split(' ')[0]
        stem, ext = os.path.splitext(os.path.basename(gt_name))
        input_name = f'{filename_tmpl.format(stem)}{ext}'
        paths.append({
            f'{input_key}_path': os.path.join(input_folder, input_name),
            f'{gt_key}_path': os.path.join(gt_folder, gt_name),
        })
    return paths


def read_lmdb_meta_info(lmdb_folder):
    """The keys listed in ``<lmdb_folder>/meta_info.txt`` (lines ``<key>.png (h,w,c) <level>``), in file order."""
    lmdb_folder = os.fspath(lmdb_folder)
    if not lmdb_folder.rstrip('/\\').endswith('.lmdb'):
        raise DatasetValueError(f"'{lmdb_folder}' should be an lmdb folder whose name ends with '.lmdb' "
                                '(io_backend type is lmdb).', lmdb_folder)
    if not os.path.isdir(lmdb_folder):
        raise DatasetFileNotFoundError(f"The lmdb folder '{lmdb_folder}' does not exist.", lmdb_folder)
    meta_file = os.path.join(lmdb_folder, 'meta_info.txt')
    keys = []
    for line in _read_meta_lines(meta_file, 'lmdb meta_info.txt'):
        match = _META_LINE.match(line)
        name = match.group('name') if match else line.split(' ')[0]
        keys.append(os.path.splitext(name)[0])
    return keys


def paired_paths_from_lmdb(folders, keys):
    """Pair the keys of two lmdb databases; both ``meta_info.txt`` files must list the same keys.

    Returns:
        list[dict]: ``{'lq_path': key, 'gt_path': key}`` in sorted key order.
    """
    (input_folder, gt_folder), (input_key, gt_key) = _check_two(folders, keys)
    input_keys = read_lmdb_meta_info(input_folder)
    gt_keys = read_lmdb_meta_info(gt_folder)
    if set(input_keys) != set(gt_keys):
        only_in = sorted(set(input_keys) - set(gt_keys))[:5]
        only_gt = sorted(set(gt_keys) - set(input_keys))[:5]
        raise DatasetValueError(
            f"The keys of the {input_key} lmdb '{input_folder}' ({len(input_keys)} keys) and the {gt_key} lmdb "
            f"'{gt_folder}' ({len(gt_keys)} keys) differ (see their meta_info.txt). Only in {input_key}: "
            f'{only_in}; only in {gt_key}: {only_gt}.')
    return [{f'{input_key}_path': k, f'{gt_key}_path': k} for k in sorted(set(input_keys))]


def paths_from_folder(folder):
    """The images in a folder (full paths, sorted)."""
    folder = _check_folder(folder, 'image', option='the dataroot')
    paths = [os.path.join(folder, n) for n in scandir(folder) if _is_image(n)]
    if not paths:
        raise DatasetValueError(f"The folder '{folder}' contains no images.", folder)
    return paths


def paths_from_lmdb(folder):
    """The keys of an lmdb database, from its ``meta_info.txt``."""
    return read_lmdb_meta_info(folder)
