"""Side-by-side crops of several runs' outputs for chosen images, one PNG per image.

    python scripts/compare_crops.py --results results/A results/B [--names A B] \
        --dataset Set5_bicubic --gt datasets/Set5/HR [--lq datasets/Set5/LR_degra/bicubic] \
        --images baby bird@40,60,48,48 --crop 100,80,64,64 --out crops/
        -> crops/Set5_bicubic_baby.png, crops/Set5_bicubic_bird.png

Each results folder is results/<name>/ of realsr/test.py run with val.save_img: true (the images are
visualization/<dataset>/<img>_<suffix>.png). A row shows the full GT with the crop box, the GT crop,
with --lq the LQ and bicubic crops, then each model's crop, nearest-upscaled (--zoom, default: up to
about 256 px), labelled with the PSNR on the crop (--psnr crop, RGB or --y-channel) or the whole
image's PSNR from the run's metrics_per_image.csv (--psnr csv). The box is x,y,w,h in output pixels;
IMG@x,y,w,h gives one image its own box.
"""
import argparse
import os
import sys

try:
    import realsr  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.benchmark.crops import CropError, parse_box, write_crop_comparison  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--results', nargs='+', required=True, metavar='DIR', help='results folders (one per model)')
    p.add_argument('--names', nargs='+', metavar='NAME', help='labels for --results, in order (default: folder names)')
    p.add_argument('--dataset', required=True, help='the test set name (the visualization sub-folder)')
    p.add_argument('--gt', required=True, metavar='DIR', help='the GT folder of that test set')
    p.add_argument('--lq', metavar='DIR', help='its LQ folder: adds the LQ and bicubic crops')
    p.add_argument('--images', nargs='+', required=True, metavar='IMG[@x,y,w,h]',
                   help='image names as saved (file stem without the _<suffix>), optionally with their own box')
    p.add_argument('--crop', metavar='x,y,w,h', help='the crop box for images given without one')
    p.add_argument('--out', required=True, metavar='DIR', help='output folder')
    p.add_argument('--psnr', choices=('crop', 'csv'), default='crop',
                   help='PSNR on the crop (default) or the whole image from metrics_per_image.csv')
    p.add_argument('--y-channel', action='store_true', help='crop PSNR on the Y channel (default RGB)')
    p.add_argument('--zoom', type=int, help='integer nearest-neighbour zoom (default: crop up to ~256 px)')
    p.add_argument('--suffix', help="the saved images' suffix (default: the results folder name, else any)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.names and len(args.names) != len(args.results):
        parser.error('--names needs one name per --results folder')
    if args.zoom is not None and args.zoom < 1:
        parser.error('--zoom must be at least 1')
    try:
        default = parse_box(args.crop) if args.crop else None
        jobs = []
        for item in args.images:
            name, _, box = item.partition('@')
            if not box and default is None:
                raise CropError(f'no crop box for {name!r}: give --crop x,y,w,h or {name}@x,y,w,h')
            jobs.append((name, parse_box(box) if box else default))
        for name, box in jobs:
            path = os.path.join(args.out, f'{args.dataset}_{name}.png')
            _, _, info = write_crop_comparison(path, args.results, args.dataset, name, args.gt, box, lq_dir=args.lq,
                                               names=args.names, psnr=args.psnr, y_channel=args.y_channel,
                                               zoom=args.zoom, suffix=args.suffix)
            print(f'wrote {path}: ' + ', '.join(f'{k} {v:.2f} dB' for k, v in info.items()))
    except CropError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
