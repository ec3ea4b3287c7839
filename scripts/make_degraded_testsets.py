"""Build the dropout papers' degraded benchmark sets from a folder of HR images.

    python scripts/make_degraded_testsets.py --hr datasets/Set5/HR --out datasets/Set5/LR_degra \
        [--scale 4] [--variants bicubic blur2_bicubic ...] [--seed 0] [--legacy-noise40]

Writes ``<out>/<variant>/<HR file name>`` for the eight variants (bicubic, blur2_bicubic,
bicubic_noise20, bicubic_jepg50, blur2_bicubic_noise20, blur2_bicubic_jepg50,
bicubic_noise20_jepg50, blur2_bicubic_noise20_jepg50), plus ``testset_manifest.json`` (seed,
noise sigmas, library versions, per-file modes/sizes/pixel SHA-256) and a ``README.md``.
The operations are documented in ``realsr/degradations/testset_protocol.py``.
"""
import argparse
import os
import sys

try:
    import realsr  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tqdm import tqdm  # noqa: E402

from realsr.degradations.testset_protocol import (DEFAULT_SEED, VARIANTS, TestsetError,  # noqa: E402
                                                  make_testsets)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--hr', required=True, help='folder of HR images')
    p.add_argument('--out', required=True, help='output folder (one sub-folder per variant)')
    p.add_argument('--scale', type=float, default=4, help='downscaling factor (default 4)')
    p.add_argument('--variants', nargs='+', choices=VARIANTS, default=list(VARIANTS), metavar='VARIANT',
                   help=f"subset of: {' '.join(VARIANTS)} (default: all eight)")
    p.add_argument('--seed', type=int, default=DEFAULT_SEED,
                   help=f'noise seed, recorded in the output manifest (default {DEFAULT_SEED})')
    p.add_argument('--legacy-noise40', action='store_true',
                   help='bicubic_noise20 with sigma 40, as older results (and Adaptive-Dropout) used')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        manifest = make_testsets(
            args.hr, args.out, scale=args.scale, variants=args.variants, seed=args.seed,
            legacy_noise40=args.legacy_noise40,
            progress=lambda it, total: tqdm(it, total=total, desc='HR images', unit='img'),
            log=lambda msg: tqdm.write(f'warning: {msg}', file=sys.stderr))
    except TestsetError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f"wrote {len(manifest['variants'])} variant folder(s) x {len(manifest['files'])} image(s) to "
          f"{args.out} (seed {manifest['seed']}, noise sigma {manifest['noise_sigma'] or '-'})")
    return 0


if __name__ == '__main__':
    sys.exit(main())
