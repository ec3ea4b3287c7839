#!/usr/bin/env python
"""Cut large training images into overlapping sub-images (BasicSR's extract_subimages.py, same crops and names).

DIV2K as BasicSR prepares it (HR 480/240, LR x2 240/120, x3 160/80, x4 120/60, thresh_size 0), for the
folders of <root>/DIV2K_train_HR and <root>/DIV2K_train_LR_bicubic/X{2,3,4} that exist:
    python scripts/extract_subimages.py --preset DIV2K --input datasets/DIV2K
One folder with one of those presets, or with explicit values (Real-ESRGAN's DF2K step):
    python scripts/extract_subimages.py --preset DIV2K_LRx4 --input LR/X4 --output LR/X4_sub
    python scripts/extract_subimages.py --input datasets/DF2K/DF2K_multiscale \\
        --output datasets/DF2K/DF2K_multiscale_sub --crop_size 400 --step 200 [--thresh_size 0]

Crop positions along each axis: 0, step, 2*step, ... while a whole crop fits, plus one last crop flush with
the far edge when more than thresh_size pixels would otherwise be left over. Sub-image k of 'name.png' is
'name_s{k:03d}.png', numbered row by row; a trailing x2/x3/x4/x8 is removed from the name (DIV2K's LR files
'0001x4.png' give '0001_s001.png', as the HR file does). Images are read unchanged (16-bit, alpha and gray
kept) and written in their own format; --compression_level is the PNG level (0-9, default 3 as BasicSR).

Running it again on the same output folder resumes: every output is written under a temporary name and
renamed when complete, so sub-images already present are complete and are kept; only missing ones are
written. The input folder and crop settings are recorded in <output>/.extract_subimages.json; a run from
another input folder or with other settings, or into a non-empty folder this script did not write, is refused
(nothing is overwritten; one output folder holds the sub-images of one input folder).
"""
import argparse
import functools
import json
import os
import re
import sys

import cv2
import numpy as np

from _prep_util import PrepError, default_n_thread, list_images, run_parallel, write_lines_atomic

SETTINGS_FILE = '.extract_subimages.json'

# BasicSR's values for DIV2K: (crop_size, step, thresh_size)
PRESETS = {
    'DIV2K_HR': (480, 240, 0),
    'DIV2K_LRx2': (240, 120, 0),
    'DIV2K_LRx3': (160, 80, 0),
    'DIV2K_LRx4': (120, 60, 0),
}
# --preset DIV2K: (preset, input folder, output folder), relative to the DIV2K root
DIV2K_JOBS = [
    ('DIV2K_HR', 'DIV2K_train_HR', 'DIV2K_train_HR_sub'),
    ('DIV2K_LRx2', 'DIV2K_train_LR_bicubic/X2', 'DIV2K_train_LR_bicubic/X2_sub'),
    ('DIV2K_LRx3', 'DIV2K_train_LR_bicubic/X3', 'DIV2K_train_LR_bicubic/X3_sub'),
    ('DIV2K_LRx4', 'DIV2K_train_LR_bicubic/X4', 'DIV2K_train_LR_bicubic/X4_sub'),
]
_SCALE_SUFFIX = re.compile(r'x[2348]$')
_OUR_TMP = re.compile(r'^\..+\.[0-9a-f]{12}\.tmp$')  # what realsr's atomic imwrite leaves if killed mid-write


def crop_starts(length, crop_size, step, thresh_size):
    """Start offsets of the crops along one axis, as BasicSR's worker computes them (empty if length < crop)."""
    starts = list(range(0, length - crop_size + 1, step))
    if not starts:
        return []
    if length - (starts[-1] + crop_size) > thresh_size:
        starts.append(length - crop_size)
    return starts


def output_stem(name):
    """The name the sub-images of ``name`` (without extension) get: a trailing DIV2K scale suffix removed.

    BasicSR removes 'x2', 'x3', 'x4' and 'x8' wherever they occur; this removes only a trailing one, which
    gives the same names for DIV2K and does not mangle names such as 'box2_photo'.
    """
    return _SCALE_SUFFIX.sub('', name)


def crop_boxes(h, w, crop_size, step, thresh_size):
    """(top, left) of every crop in output order: rows (top) outer, columns (left) inner."""
    return [(top, left) for top in crop_starts(h, crop_size, step, thresh_size)
            for left in crop_starts(w, crop_size, step, thresh_size)]


def _header_size(path):
    """(h, w) from the file header without decoding the pixels, or None when PIL cannot tell."""
    try:
        from PIL import Image
        with Image.open(path) as img:
            w, h = img.size
        return h, w
    except Exception:  # any format PIL does not know: fall back to decoding with OpenCV
        return None


def read_unchanged(path):
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise PrepError(f"Cannot read image '{path}': the file is empty, truncated or not an image OpenCV can "
                        'decode. Replace or remove it, then run again (sub-images already written are kept).')
    if img.ndim not in (2, 3):
        raise PrepError(f"Image '{path}' has {img.ndim} dimensions; expected 2 (gray) or 3.")
    return img


def extract_one(path, save_folder, crop_size, step, thresh_size, compression_level):
    """Write the missing sub-images of one image. Returns ``{'written', 'kept', 'too_small'}``."""
    from realsr.utils.img_util import imwrite  # atomic: temporary file + os.replace

    name, ext = os.path.splitext(os.path.basename(path))
    stem = output_stem(name)

    def targets(h, w):
        boxes = crop_boxes(h, w, crop_size, step, thresh_size)
        return [(box, os.path.join(save_folder, f'{stem}_s{k:03d}{ext}')) for k, box in enumerate(boxes, start=1)]

    size = _header_size(path)
    if size is not None:
        planned = targets(*size)
        if planned and all(os.path.exists(t) for _, t in planned):
            return {'written': 0, 'kept': len(planned), 'too_small': False}
    img = read_unchanged(path)
    planned = targets(*img.shape[:2])
    written = kept = 0
    for (top, left), target in planned:
        if os.path.exists(target):
            kept += 1
            continue
        crop = np.ascontiguousarray(img[top:top + crop_size, left:left + crop_size, ...])
        imwrite(crop, target, [cv2.IMWRITE_PNG_COMPRESSION, int(compression_level)])
        written += 1
    return {'written': written, 'kept': kept, 'too_small': not planned}


def _check_settings(save_folder, settings):
    """Refuse an output folder holding other files, or sub-images of another folder or cut with other settings
    (a sub-image of the same name would be taken as already done); record ours."""
    record = os.path.join(save_folder, SETTINGS_FILE)
    if os.path.isfile(record):
        with open(record, encoding='utf-8') as f:
            try:
                previous = json.load(f)
            except json.JSONDecodeError:
                previous = None
        if previous != settings:
            raise PrepError(f"'{save_folder}' holds sub-images of another input folder or cut with other settings "
                            f'({previous}, recorded in {record}); this run asks for {settings}. Use another --output '
                            'folder or delete this one.')
        return
    if os.path.isdir(save_folder) and any(not n.startswith('.') for n in os.listdir(save_folder)):
        raise PrepError(f"The output folder '{save_folder}' is not empty and was not written by this script (no "
                        f'{SETTINGS_FILE}); refusing to mix sub-images into it. Use a new --output folder.')
    write_lines_atomic(record, [json.dumps(settings, sort_keys=True)])


def _remove_stale_temporaries(save_folder):
    for n in os.listdir(save_folder):
        if _OUR_TMP.match(n):
            os.remove(os.path.join(save_folder, n))


def extract_subimages(input_folder, save_folder, crop_size, step, thresh_size=0, compression_level=3, n_thread=1,
                      progress=True):
    """Cut every image of ``input_folder`` into sub-images in ``save_folder``; see the module docstring.

    Returns ``{'images', 'written', 'kept', 'too_small': [names]}``.
    """
    for key, value, low in (('crop_size', crop_size, 1), ('step', step, 1), ('thresh_size', thresh_size, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise PrepError(f'{key} must be an integer >= {low}, got {value!r}.')
    if not 0 <= int(compression_level) <= 9:
        raise PrepError(f'compression_level must be 0-9 (PNG compression), got {compression_level!r}.')
    names = list_images(input_folder)
    if os.path.exists(save_folder) and os.path.samefile(input_folder, save_folder):
        raise PrepError(f"The output folder is the input folder '{input_folder}'; choose another --output.")
    stems = {}
    for n in names:
        stems.setdefault(output_stem(os.path.splitext(n)[0]) + os.path.splitext(n)[1], []).append(n)
    clashes = {k: v for k, v in stems.items() if len(v) > 1}
    if clashes:
        shown = '; '.join(f"{' and '.join(v)} -> {k}" for k, v in list(clashes.items())[:5])
        raise PrepError(f"Several images of '{input_folder}' would give sub-images of the same name: {shown}.")
    os.makedirs(save_folder, exist_ok=True)
    _check_settings(save_folder, {'input': os.path.realpath(input_folder), 'crop_size': int(crop_size),
                                  'step': int(step), 'thresh_size': int(thresh_size)})
    _remove_stale_temporaries(save_folder)
    worker = functools.partial(extract_one, save_folder=save_folder, crop_size=int(crop_size), step=int(step),
                               thresh_size=int(thresh_size), compression_level=int(compression_level))
    paths = [os.path.join(input_folder, n) for n in names]
    results = run_parallel(worker, paths, n_thread, desc=f'Extract {os.path.basename(os.path.normpath(input_folder))}',
                           progress=progress)
    return {'images': len(names), 'written': sum(r['written'] for r in results),
            'kept': sum(r['kept'] for r in results),
            'too_small': [n for n, r in zip(names, results) if r['too_small']]}


def _report(input_folder, save_folder, info):
    print(f"{input_folder} -> {save_folder}: {info['images']} images, {info['written']} sub-images written, "
          f"{info['kept']} already there")
    if info['too_small']:
        shown = ', '.join(info['too_small'][:10]) + (' ...' if len(info['too_small']) > 10 else '')
        print(f"warning: {len(info['too_small'])} image(s) smaller than the crop gave no sub-image: {shown}",
              file=sys.stderr)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', help='input folder; with --preset DIV2K the DIV2K root (default datasets/DIV2K)')
    p.add_argument('--output', help='output folder; with --preset DIV2K the root the *_sub folders go to '
                   '(default: the --input root)')
    p.add_argument('--preset', choices=['DIV2K', *PRESETS],
                   help="BasicSR's DIV2K values: DIV2K = all four folders under a root; DIV2K_HR 480/240/0, "
                        'DIV2K_LRx2 240/120/0, DIV2K_LRx3 160/80/0, DIV2K_LRx4 120/60/0 for one folder')
    p.add_argument('--crop_size', type=int, help='crop size in pixels (default 480; not with --preset)')
    p.add_argument('--step', type=int, help='step of the sliding window (default 240; not with --preset)')
    p.add_argument('--thresh_size', type=int,
                   help='a last crop flush with the edge is added when more than this many pixels are left '
                        '(default 0; not with --preset)')
    p.add_argument('--compression_level', type=int, default=3, help='PNG compression level 0-9 (default 3)')
    p.add_argument('--n_thread', type=int, default=default_n_thread(),
                   help='worker processes (default: the CPU count, at most 20)')
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = {k: getattr(args, k) for k in ('crop_size', 'step', 'thresh_size') if getattr(args, k) is not None}
    if args.preset and explicit:
        parser.error(f"--preset {args.preset} sets crop_size/step/thresh_size; do not also give "
                     f"{', '.join('--' + k for k in explicit)}")
    if args.preset == 'DIV2K':
        root = args.input or 'datasets/DIV2K'
        out_root = args.output or root
        jobs = [(PRESETS[p], os.path.join(root, i), os.path.join(out_root, o)) for p, i, o in DIV2K_JOBS]
        jobs = [j for j in jobs if os.path.isdir(j[1])]
        if not jobs:
            parser.error(f"--preset DIV2K found none of {', '.join(i for _, i, _ in DIV2K_JOBS)} under '{root}'")
    else:
        if not args.input or not args.output:
            parser.error('give --input and --output (or --preset DIV2K with the DIV2K root as --input)')
        values = PRESETS[args.preset] if args.preset else (explicit.get('crop_size', 480), explicit.get('step', 240),
                                                           explicit.get('thresh_size', 0))
        jobs = [(values, args.input, args.output)]
    try:
        for (crop_size, step, thresh_size), input_folder, save_folder in jobs:
            info = extract_subimages(input_folder, save_folder, crop_size, step, thresh_size,
                                     compression_level=args.compression_level, n_thread=args.n_thread)
            _report(input_folder, save_folder, info)
    except (PrepError, OSError) as err:
        print(f'extract_subimages: error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
