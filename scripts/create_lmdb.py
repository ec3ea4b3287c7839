#!/usr/bin/env python
"""Convert image folders into lmdb databases readable with ``io_backend: {type: lmdb}``.

One folder:
    python scripts/create_lmdb.py --input datasets/DIV2K/HR_sub --output datasets/DIV2K/HR_sub.lmdb

A GT/LQ pair (both databases get the same keys, the GT file names without extension):
    python scripts/create_lmdb.py --gt datasets/DIV2K/HR_sub --lq datasets/DIV2K/LR_sub/X4 \\
        [--filename-tmpl '{}x4'] [--gt-output HR_sub.lmdb --lq-output X4.lmdb]

Options: --compress-level (PNG level of the stored images, default 1), --n-thread, --recursive
(single-folder form), --overwrite, --no-progress.
"""
import argparse
import os
import sys

try:
    import realsr  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.data.lmdb_util import make_lmdb_from_folder, make_paired_lmdb  # noqa: E402


def _default_output(folder):
    return os.path.normpath(folder).rstrip('/\\') + '.lmdb'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Write image folders into BasicSR-format lmdb databases.')
    single = parser.add_argument_group('one folder')
    single.add_argument('--input', help='folder of images')
    single.add_argument('--output', help='output .lmdb folder (default: <input>.lmdb)')
    single.add_argument('--recursive', action='store_true', help='include sub-folders (keys keep the sub-path)')
    paired = parser.add_argument_group('a GT/LQ pair')
    paired.add_argument('--gt', help='GT folder')
    paired.add_argument('--lq', help='LQ folder')
    paired.add_argument('--gt-output', help='GT .lmdb output (default: <gt>.lmdb)')
    paired.add_argument('--lq-output', help='LQ .lmdb output (default: <lq>.lmdb)')
    paired.add_argument('--filename-tmpl', default='{}',
                        help="LQ name template, e.g. '{}x4' when the LQ of baby.png is babyx4.png (default '{}')")
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0-9',
                        help='PNG compression level of the stored images (default 1)')
    parser.add_argument('--n-thread', type=int, default=None, help='reading threads (default: CPU count, max 16)')
    parser.add_argument('--overwrite', action='store_true', help='replace existing outputs')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.gt or args.lq):
        parser.error('give either --input (one folder) or --gt and --lq (a pair)')
    if not args.input and not (args.gt and args.lq):
        parser.error('the paired form needs both --gt and --lq')
    return args


def main(argv=None):
    args = parse_args(argv)
    common = dict(compress_level=args.compress_level, n_thread=args.n_thread, overwrite=args.overwrite,
                  progress=not args.no_progress)
    try:
        if args.input:
            out = args.output or _default_output(args.input)
            info = make_lmdb_from_folder(args.input, out, recursive=args.recursive, **common)
            print(f"Wrote {info['num_images']} images into {info['lmdb_path']}")
        else:
            gt_out = args.gt_output or _default_output(args.gt)
            lq_out = args.lq_output or _default_output(args.lq)
            info = make_paired_lmdb(args.gt, args.lq, gt_out, lq_out, filename_tmpl=args.filename_tmpl, **common)
            print(f"Wrote {info['gt']['num_images']} pairs into {info['gt']['lmdb_path']} and "
                  f"{info['lq']['lmdb_path']}")
    except (OSError, ValueError) as err:
        print(f'create_lmdb: error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
