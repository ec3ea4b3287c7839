#!/usr/bin/env python
"""Write a meta_info file of GT/LQ pairs (Real-ESRGAN's generate_meta_info_pairdata.py format).

    python scripts/generate_meta_info_pairdata.py \\
        --input datasets/DIV2K/DIV2K_train_HR_sub datasets/DIV2K/DIV2K_train_LR_bicubic/X4_sub \\
        --meta_info datasets/DIV2K/meta_info/meta_info_DIV2K_sub_pair.txt

Each line is 'gt_path, lq_path', each relative to its --root (default: the folder's parent), sorted by the
GT name; RealESRGANPairedDataset reads it with dataroot_gt and dataroot_lq set to those roots. The LQ of
'name.png' is the LQ image whose name without extension is --filename_tmpl with 'name' put in (default
'{}': the same name; '{}x4' for DIV2K's un-cropped LR files). Real-ESRGAN pairs the two sorted lists by
position; this pairs by name and stops with the unmatched names listed when the folders do not pair up.
The file is written atomically, replacing an older one.
"""
import argparse
import os
import sys

from _prep_util import PrepError, check_name_tokens, list_images, relative_prefix, write_lines_atomic


def _listing(names, limit=10):
    return ', '.join(names[:limit]) + (f' ... ({len(names)} in all)' if len(names) > limit else '')


def pair_lines(gt_folder, lq_folder, gt_root=None, lq_root=None, filename_tmpl='{}'):
    """The 'gt, lq' lines; raises PrepError naming the images that have no partner."""
    if '{}' not in filename_tmpl:
        raise PrepError(f"--filename_tmpl must contain '{{}}' (where the GT name goes), got {filename_tmpl!r}.")
    gt_root = gt_root or os.path.dirname(os.path.normpath(gt_folder)) or '.'
    lq_root = lq_root or os.path.dirname(os.path.normpath(lq_folder)) or '.'
    gt_names, lq_names = list_images(gt_folder, 'GT'), list_images(lq_folder, 'LQ')
    lq_by_stem = {}
    for name in lq_names:
        stem = os.path.splitext(name)[0]
        if stem in lq_by_stem:
            raise PrepError(f"The LQ folder '{lq_folder}' has two images named {stem!r}: {lq_by_stem[stem]} and "
                            f'{name}.')
        lq_by_stem[stem] = name
    pairs, gt_alone = [], []
    for name in gt_names:
        lq = lq_by_stem.get(filename_tmpl.format(os.path.splitext(name)[0]))
        if lq:
            pairs.append((name, lq))
        else:
            gt_alone.append(name)
    lq_alone = sorted(set(lq_names) - {lq for _, lq in pairs})
    if gt_alone or lq_alone:
        parts = []
        if gt_alone:
            parts.append(f"GT images without an LQ image ({filename_tmpl!r}) in '{lq_folder}': {_listing(gt_alone)}")
        if lq_alone:
            parts.append(f"LQ images without a GT image in '{gt_folder}': {_listing(lq_alone)}")
        raise PrepError('The GT and LQ folders do not pair up. ' + '. '.join(parts) + '.')
    gt_prefix, lq_prefix = relative_prefix(gt_folder, gt_root), relative_prefix(lq_folder, lq_root)
    lines = [(gt_prefix + gt, lq_prefix + lq) for gt, lq in pairs]
    check_name_tokens([p for line in lines for p in line], ', ', 'the pair meta_info')
    return [f'{gt}, {lq}' for gt, lq in lines]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', nargs=2, required=True, metavar=('GT_FOLDER', 'LQ_FOLDER'), help='the GT and LQ folders')
    p.add_argument('--root', nargs=2, metavar=('GT_ROOT', 'LQ_ROOT'),
                   help="the roots the paths are relative to (default: each folder's parent)")
    p.add_argument('--meta_info', required=True, help='the text file to write')
    p.add_argument('--filename_tmpl', default='{}', help="LQ name for a GT name, e.g. '{}x4' (default '{}')")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    roots = args.root or (None, None)
    try:
        lines = pair_lines(args.input[0], args.input[1], roots[0], roots[1], filename_tmpl=args.filename_tmpl)
        write_lines_atomic(args.meta_info, lines)
    except (PrepError, OSError) as err:
        print(f'generate_meta_info_pairdata: error: {err}', file=sys.stderr)
        return 1
    print(f'{args.meta_info}: {len(lines)} pairs')
    return 0


if __name__ == '__main__':
    sys.exit(main())
