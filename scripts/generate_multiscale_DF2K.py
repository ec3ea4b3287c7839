#!/usr/bin/env python
"""Make Real-ESRGAN's multi-scale copies of HR images (its generate_multiscale_DF2K.py, same sizes and names).

    python scripts/generate_multiscale_DF2K.py --input datasets/DF2K/DF2K_HR --output datasets/DF2K/DF2K_multiscale

For each image 'name.ext' (w x h) it writes, resized with PIL's LANCZOS filter:
'nameT0.png' at 0.75, 'nameT1.png' at 0.5, 'nameT2.png' at 1/3 (each side int(side * scale)), and
'nameT3.png' with the shorter side 400 and the longer int(400 * longer / shorter) (square images: both 400).
Images whose shorter side is under 400 are enlarged for T3, as in Real-ESRGAN.

Outputs are written under a temporary name and renamed when complete, so running it again on the same
output folder is a no-op for the images whose four outputs exist and fills in the others.
"""
import argparse
import functools
import io
import os
import sys

from _prep_util import PrepError, default_n_thread, list_images, run_parallel, write_bytes_atomic

SCALES = (0.75, 0.5, 1 / 3)
SHORTEST_EDGE = 400


def multiscale_sizes(width, height, scales=SCALES, shortest_edge=SHORTEST_EDGE):
    """[(w, h)] of the outputs T0, T1, ... in Real-ESRGAN's rounding (int() truncates)."""
    sizes = [(int(width * s), int(height * s)) for s in scales]
    if width < height:
        sizes.append((shortest_edge, int(shortest_edge * (height / width))))
    else:
        sizes.append((int(shortest_edge * (width / height)), shortest_edge))
    return sizes


def output_names(basename, count=len(SCALES) + 1):
    return [f'{basename}T{i}.png' for i in range(count)]


def resize_one(path, save_folder):
    """Write the missing multi-scale copies of one image; returns how many were written."""
    from PIL import Image

    basename = os.path.splitext(os.path.basename(path))[0]
    targets = [os.path.join(save_folder, n) for n in output_names(basename)]
    if all(os.path.exists(t) for t in targets):
        return 0
    try:
        img = Image.open(path)
        img.load()
    except Exception as err:  # PIL raises several types for unreadable files
        raise PrepError(f"Cannot read image '{path}': {err}. Replace or remove it, then run again "
                        '(outputs already written are kept).') from None
    written = 0
    for (w, h), target in zip(multiscale_sizes(*img.size), targets):
        if os.path.exists(target):
            continue
        if w < 1 or h < 1:
            raise PrepError(f"Image '{path}' ({img.size[0]}x{img.size[1]}) is too small: a scaled copy would be "
                            f'{w}x{h}.')
        buf = io.BytesIO()
        img.resize((w, h), resample=Image.Resampling.LANCZOS).save(buf, format='PNG')
        write_bytes_atomic(target, buf.getvalue())
        written += 1
    return written


def generate_multiscale(input_folder, save_folder, n_thread=1, progress=True):
    """Multi-scale copies of every image of ``input_folder``; returns ``{'images', 'written'}``."""
    names = list_images(input_folder)
    stems = [os.path.splitext(n)[0] for n in names]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise PrepError(f"Images in '{input_folder}' differ only in their extension, so their outputs would clash: "
                        f'{clashes[:5]}.')
    os.makedirs(save_folder, exist_ok=True)
    worker = functools.partial(resize_one, save_folder=save_folder)
    written = run_parallel(worker, [os.path.join(input_folder, n) for n in names], n_thread, desc='Multiscale',
                           progress=progress)
    return {'images': len(names), 'written': sum(written)}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', default='datasets/DF2K/DF2K_HR', help='HR folder (default datasets/DF2K/DF2K_HR)')
    p.add_argument('--output', default='datasets/DF2K/DF2K_multiscale',
                   help='output folder (default datasets/DF2K/DF2K_multiscale)')
    p.add_argument('--n_thread', '--num_threads', type=int, default=default_n_thread(),
                   help='worker processes (default: the CPU count, at most 20)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        info = generate_multiscale(args.input, args.output, n_thread=args.n_thread)
    except (PrepError, OSError) as err:
        print(f'generate_multiscale_DF2K: error: {err}', file=sys.stderr)
        return 1
    print(f"{args.input} -> {args.output}: {info['images']} images, {info['written']} files written")
    return 0


if __name__ == '__main__':
    sys.exit(main())
