"""Show what an option file's degradation settings produce: a PNG grid with, per row, a GT crop
and the LQ images the pipeline makes from it (upscaled with nearest neighbour to the GT size,
so they can be compared pixel for pixel).

    python scripts/show_degradations.py -opt options/train/X.yml [--num 6] [--variants 3] [--out degradations.png]

It reads the train dataset of the file (RealESRGANDataset keys) and the top-level pipeline keys;
nothing is trained and no experiment folder is written. For DASR / CDDNet files (``DASRModel`` or a
``degree_list``) the columns are grouped by degradation space: ``--variants`` LQ images of each of
the weak, standard and severe spaces.
"""
import argparse
import os
import sys

import cv2
import numpy as np
import torch

try:
    import realsr  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.data import build_dataset  # noqa: E402
from realsr.degradations.dasr_spaces import DASRDegradation  # noqa: E402
from realsr.degradations.pipeline import SecondOrderDegradation  # noqa: E402
from realsr.degradations.usm import USMSharp  # noqa: E402
from realsr.options import apply_force_yml, load_option_file  # noqa: E402
from realsr.utils.img_util import imwrite, tensor2img  # noqa: E402


def label(img, text):
    out = img.copy()
    cv2.putText(out, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def make_grid(opt, num, variants, seed, device):
    train_opt = dict(opt['datasets']['train'])
    train_opt['phase'] = 'train'
    train_opt.setdefault('scale', opt.get('scale', 4))
    dataset = build_dataset(train_opt)
    if len(dataset) == 0:
        raise SystemExit(f"the train dataset '{train_opt.get('dataroot_gt')}' has no image")
    scale = int(opt.get('scale', 4))
    dasr = opt.get('model_type') == 'DASRModel' or 'degree_list' in opt
    if dasr:  # one group of columns per DASR degradation space
        spaces = DASRDegradation(opt, train_opt, scale).to(device)
        columns = [(name.split('_')[0], lambda x, g, name=name: spaces(x, g, space=name)[0]) for name in spaces.names]
    else:
        pipeline = SecondOrderDegradation(opt, train_opt, scale).to(device)
        columns = [('LQ', pipeline)]
    usm = USMSharp().to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    gt_size = int(opt.get('gt_size', train_opt.get('gt_size', 256)))
    gts = torch.stack([dataset[i % len(dataset)]['gt'] for i in range(num)]).to(device)
    if opt.get('gt_usm', False) or opt.get('model_type') in ('RealESRGANModel', 'DASRModel'):
        gts_in = usm(gts)
    else:
        gts_in = gts
    # centre crop so the picture shows the training patch size
    h, w = gts.shape[-2:]
    gt_size = min(gt_size, h, w) // scale * scale
    top, left = (h - gt_size) // 2 // scale * scale, (w - gt_size) // 2 // scale * scale
    rows = []
    # each call draws new degradations
    lqs = [(f'{title} {v + 1} (x{scale})', degrade(gts_in, generator)) for title, degrade in columns
           for v in range(variants)]
    for i in range(num):
        gt_img = tensor2img(gts[i, :, top:top + gt_size, left:left + gt_size])
        tiles = [label(gt_img, 'GT')]
        for title, lq in lqs:
            lq_crop = lq[i, :, top // scale:(top + gt_size) // scale, left // scale:(left + gt_size) // scale]
            lq_img = cv2.resize(tensor2img(lq_crop), (gt_size, gt_size), interpolation=cv2.INTER_NEAREST)
            tiles.append(label(lq_img, title))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='option file with a RealESRGANDataset train section')
    parser.add_argument('--num', type=int, default=6, help='GT images (rows)')
    parser.add_argument('--variants', type=int, default=3, help='degraded versions per GT (columns)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='degradations.png')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--force_yml', nargs='+', default=None, help='override options, e.g. datasets:train:dataroot_gt=x')
    args = parser.parse_args(argv)
    opt = load_option_file(args.opt)
    apply_force_yml(opt, args.force_yml)
    grid = make_grid(opt, args.num, args.variants, args.seed, torch.device(args.device))
    imwrite(grid, args.out)
    print(f'wrote {args.out} ({grid.shape[1]}x{grid.shape[0]}): rows = GT crops, columns = GT and '
          f'{args.variants} degraded LQ versions (per degradation space for DASR files)')


if __name__ == '__main__':
    main()
