#!/usr/bin/env python
"""Write a meta_info file listing the images of one or more folders (Real-ESRGAN's generate_meta_info.py format).

    python scripts/generate_meta_info.py --input datasets/DF2K/DF2K_HR datasets/DF2K/DF2K_multiscale \\
        --root datasets/DF2K datasets/DF2K --meta_info datasets/DF2K/meta_info/meta_info_DF2Kmultiscale.txt

Each line is one image path relative to its folder's --root (e.g. 'DF2K_HR/0001.png'), the folders in the
order given and the images of each folder sorted by name; that is what `meta_info:` of RealESRGANDataset
reads, joined to `dataroot_gt` (so set dataroot_gt to the root). --root defaults to each input's parent
folder. --format basicsr writes BasicSR's DIV2K style instead, 'name.png (h,w,c)' per line. --check decodes
every image and leaves out (and lists) the ones that cannot be read. Only image files directly inside each
folder are listed (hidden files and other files are skipped). The file is written atomically, replacing an
older one.
"""
import argparse
import os
import sys

from _prep_util import (PrepError, check_name_tokens, default_n_thread, list_images, relative_prefix, run_parallel,
                        write_lines_atomic)


def image_shape(path):
    """(h, w, c) of an image as the readers would decode it (cv2, unchanged), or None when it cannot be read."""
    import cv2
    import numpy as np

    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        return None
    return img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2]


def meta_info_lines(inputs, roots=None, fmt='realesrgan', check=False, n_thread=1, progress=True):
    """The lines of the meta_info file and the list of images left out by ``check``.

    Args:
        inputs (list[str]): image folders.
        roots (list[str], optional): one root per input (default: each input's parent folder).
        fmt (str): 'realesrgan' ('rel/path.png') or 'basicsr' ('rel/path.png (h,w,c)').
        check (bool): decode every image; unreadable ones are left out and returned.
    """
    if fmt not in ('realesrgan', 'basicsr'):
        raise PrepError(f"Unknown format {fmt!r}; use 'realesrgan' or 'basicsr'.")
    roots = list(roots) if roots else [os.path.dirname(os.path.normpath(i)) or '.' for i in inputs]
    if len(roots) != len(inputs):
        raise PrepError(f'Give one --root per --input: got {len(inputs)} inputs ({inputs}) and {len(roots)} roots '
                        f'({roots}).')
    rel_paths, full_paths = [], []
    for folder, root in zip(inputs, roots):
        prefix = relative_prefix(folder, root)
        for name in list_images(folder):
            rel_paths.append(prefix + name)
            full_paths.append(os.path.join(folder, name))
    check_name_tokens(rel_paths, ' ', 'the meta_info')
    seen = set()
    duplicates = [p for p in rel_paths if p in seen or seen.add(p)]
    if duplicates:
        raise PrepError(f'These paths would be listed twice (the same folder given twice?): {duplicates[:5]}')
    shapes = [None] * len(full_paths)
    if check or fmt == 'basicsr':
        shapes = run_parallel(image_shape, full_paths, n_thread, desc='Read', progress=progress)
    bad = [p for p, s in zip(full_paths, shapes) if s is None] if (check or fmt == 'basicsr') else []
    if bad and not check:
        raise PrepError(f"Cannot read {len(bad)} image(s), e.g. '{bad[0]}' (use --check to leave them out).")
    lines = []
    for rel, shape in zip(rel_paths, shapes):
        if (check or fmt == 'basicsr') and shape is None:
            continue
        lines.append(rel if fmt == 'realesrgan' else f'{rel} ({shape[0]},{shape[1]},{shape[2]})')
    return lines, bad


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', nargs='+', required=True, help='image folder(s)')
    p.add_argument('--root', nargs='+', help="one root per input, the paths are relative to it (default: each "
                   "input's parent folder)")
    p.add_argument('--meta_info', required=True, help='the text file to write')
    p.add_argument('--format', choices=['realesrgan', 'basicsr'], default='realesrgan',
                   help="'realesrgan': one path per line (default); 'basicsr': 'path (h,w,c)' per line")
    p.add_argument('--check', action='store_true', help='decode every image; leave out the unreadable ones')
    p.add_argument('--n_thread', type=int, default=default_n_thread(),
                   help='worker processes for --check / --format basicsr (default: the CPU count, at most 20)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        lines, bad = meta_info_lines(args.input, args.root, fmt=args.format, check=args.check, n_thread=args.n_thread)
        if not lines:
            raise PrepError('No readable image to list.')
        write_lines_atomic(args.meta_info, lines)
    except (PrepError, OSError) as err:
        print(f'generate_meta_info: error: {err}', file=sys.stderr)
        return 1
    for path in bad:
        print(f'left out (cannot be read): {path}', file=sys.stderr)
    print(f'{args.meta_info}: {len(lines)} images')
    return 0


if __name__ == '__main__':
    sys.exit(main())
