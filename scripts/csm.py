"""Channel saliency map (CSM) of a trained network: which feature channels at a site matter.

    python scripts/csm.py --arch MSRResNet_details --arch-opt num_feat=64 num_block=16 upscale=4 \\
        --model net_g.pth [--param-key params_ema] --site conv_last:input \\
        --input LR_folder_or_image [--gt GT_folder_or_image [--gt-tmpl '{}x4']] --out results/csm
    python scripts/csm.py --opt options/test/X.yml [--site ...] [--input ...] --out results/csm

For every channel at the site (written as for regularizers: 'conv_last:input' is the features
entering conv_last; glob patterns analyse each matching module) it computes the gradient
attribution of the output's edge energy and the PSNR drop when the channel is zeroed, then
writes, per site, into <out>/<module>.<side>/: channels.csv, per_image.csv, attribution.png,
ablation_drop.png, attribution_vs_drop.png, and features_<image>.png / saliency_<image>.png
(heat maps of the top channels). The formulas are in realsr/analysis/channel_saliency.py and
docs/regularizers.md.

With --opt the network comes from network_g and path.pretrain_network_g / param_key_g /
strict_load_g; the site from the first regularizers: entry (else conv_last:input); the images
from the first dataset with dataroot_lq (and its dataroot_gt / filename_tmpl). Flags override.
"""
import argparse
import os
import sys

import numpy as np
import torch
import yaml

try:
    import realsr  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.analysis.channel_saliency import (SiteError, compute_channel_saliency, resolve_site,  # noqa: E402
                                              write_report)
from realsr.archs import build_network  # noqa: E402
from realsr.runtime.checkpoint import load_network  # noqa: E402
from realsr.options import load_option_file  # noqa: E402
from realsr.utils.img_util import img2tensor, imfrombytes  # noqa: E402

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


class CSMError(Exception):
    pass


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--opt', help='a test (or train) option file: network_g, path.*, regularizers and datasets')
    p.add_argument('--arch', help='arch name (with --opt, used instead of its network_g; give the arguments '
                   'with --arch-opt)')
    p.add_argument('--arch-opt', nargs='*', default=[], metavar='KEY=VALUE',
                   help='arch arguments, e.g. num_feat=64 num_block=16 upscale=4 (values parsed as YAML; with '
                   '--opt and no --arch they override network_g entries)')
    p.add_argument('--model', help='network file (.pth); default: path.pretrain_network_g of --opt')
    p.add_argument('--param-key', help="key of the weights in the file (default: path.param_key_g or 'params')")
    p.add_argument('--strict', action=argparse.BooleanOptionalAction, default=None,
                   help='strict loading (default: path.strict_load_g, else true)')
    p.add_argument('--site', nargs='+', help="site(s), e.g. conv_last:input (default: the first regularizer's "
                   "sites in --opt, else conv_last:input); a glob pattern analyses every module it matches")
    p.add_argument('--input', help='an LR image or a folder of them')
    p.add_argument('--gt', help='the GT image or a folder of GT images (optional: without it the ablated outputs '
                   'are compared with the unablated output)')
    p.add_argument('--gt-tmpl', default=None,
                   help="LR name template, as filename_tmpl in option files: the LR of GT 'baby.png' is "
                   "tmpl.format('baby') + extension (default '{}')")
    p.add_argument('--out', default='results/csm', help='output folder (default results/csm)')
    p.add_argument('--top', type=int, default=16, help='channels shown in the heat-map grids (default 16)')
    p.add_argument('--rank-by', choices=('attribution', 'drop'), default='attribution',
                   help='how the top channels of the grids are chosen')
    p.add_argument('--ablation', choices=('zero', 'rescale'), default='zero',
                   help="'zero': the channel is set to 0 (default); 'rescale': also scale the other channels "
                   "to keep sum|F| (the paper tool's variant)")
    p.add_argument('--chunk', type=int, default=8, help='ablation masks per forward pass (default 8)')
    p.add_argument('--crop-border', type=int, default=0, help='pixels cropped before PSNR (default 0)')
    p.add_argument('--max-images', type=int, default=None, help='use only the first N images')
    p.add_argument('--map-images', type=int, default=1, help='images that get heat-map grids (default 1)')
    p.add_argument('--device', default=None, help="'cpu', 'cuda', 'cuda:1' ... (default: cuda if available)")
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    return p


def parse_arch_opts(items):
    kwargs = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise CSMError(f"--arch-opt takes KEY=VALUE items, got {item!r}")
        kwargs[key] = yaml.safe_load(value)
    return kwargs


def list_images(path, what):
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise CSMError(f'{what} {path!r} does not exist')
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMG_EXTENSIONS))
    if not files:
        raise CSMError(f'{what} folder {path!r} holds no image ({", ".join(IMG_EXTENSIONS)})')
    return files


def pair_gt(lq_paths, gt, tmpl):
    """The GT path of each LR image: LR stem == tmpl.format(GT stem)."""
    if gt is None:
        return [None] * len(lq_paths)
    gt_paths = list_images(gt, '--gt')
    if os.path.isfile(gt):
        if len(lq_paths) != 1:
            raise CSMError('--gt is one image but --input holds several; give a GT folder')
        return gt_paths
    by_lq_stem = {tmpl.format(os.path.splitext(os.path.basename(p))[0]): p for p in gt_paths}
    pairs = []
    for p in lq_paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem not in by_lq_stem:
            example = os.path.basename(gt_paths[0])
            raise CSMError(f"no GT for '{os.path.basename(p)}' in {gt!r} (GT names like '{example}', template "
                           f"{tmpl!r}); set --gt-tmpl so that tmpl.format(<GT name without extension>) gives "
                           'the LR name')
        pairs.append(by_lq_stem[stem])
    return pairs


def read_image(path):
    with open(path, 'rb') as f:
        return imfrombytes(f.read(), path=path)


def samples(lq_paths, gt_paths):
    for lq_path, gt_path in zip(lq_paths, gt_paths):
        lq = img2tensor(read_image(lq_path).astype(np.float32) / 255., bgr2rgb=True).unsqueeze(0)
        yield os.path.basename(lq_path), lq, (read_image(gt_path) if gt_path else None)


def settings_from(args):
    """Network options, weights, sites and image folders from the flags and the option file."""
    opt = load_option_file(args.opt) if args.opt else {}
    path_opt = opt.get('path') or {}
    if args.arch:
        net_opt = {'type': args.arch, **parse_arch_opts(args.arch_opt)}
    elif opt.get('network_g'):
        net_opt = {**opt['network_g'], **parse_arch_opts(args.arch_opt)}
    else:
        raise CSMError('give --arch (and --arch-opt) or an option file with network_g (--opt)')
    model = args.model or path_opt.get('pretrain_network_g')
    if not model:
        raise CSMError('give the network file with --model (or path.pretrain_network_g in --opt)')
    param_key = args.param_key or path_opt.get('param_key_g') or 'params'
    strict = args.strict if args.strict is not None else bool(path_opt.get('strict_load_g', True))
    sites = args.site
    if not sites:
        regs = opt.get('regularizers') or []
        sites = list(regs[0].get('sites') or []) if regs and isinstance(regs[0], dict) else []
        sites = sites or ['conv_last:input']
    dataset = next((d for d in (opt.get('datasets') or {}).values() if isinstance(d, dict) and d.get('dataroot_lq')),
                   {})
    lq = args.input or dataset.get('dataroot_lq')
    if not lq:
        raise CSMError('give the LR images with --input (or a dataset with dataroot_lq in --opt)')
    gt = args.gt if args.gt else (dataset.get('dataroot_gt') if not args.input else None)
    tmpl = args.gt_tmpl or (dataset.get('filename_tmpl') if not args.input else None) or '{}'
    return net_opt, model, param_key, strict, sites, lq, gt, tmpl


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        net_opt, model, param_key, strict, sites, lq, gt, tmpl = settings_from(args)
        device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
        try:
            net = build_network(net_opt)
        except KeyError as err:
            raise CSMError(err.args[0] if err.args else str(err)) from None
        try:
            load_network(net, model, strict=strict, param_key=param_key)
        except (KeyError, RuntimeError) as err:
            raise CSMError(err.args[0] if err.args else str(err)) from None
        net.to(device).eval()
        resolved = [match for site in sites for match in resolve_site(net, site)]  # every site checked first
        lq_paths = list_images(lq, '--input')[:args.max_images]
        gt_paths = pair_gt(lq_paths, gt, tmpl)
        print(f"csm: {type(net).__name__} from {model} [{param_key}], {len(lq_paths)} image(s)"
              f"{' with GT' if gt else ' (no GT: ablations compared with the unablated output)'}, device {device}")
        for match in resolved:
            _, name, _, side = match
            result = compute_channel_saliency(net, match, samples(lq_paths, gt_paths), mode=args.ablation,
                                              chunk=args.chunk, crop_border=args.crop_border,
                                              keep_maps=args.map_images, progress=not args.quiet,
                                              total=len(lq_paths))
            out_dir = os.path.join(args.out, f'{name}.{side}')
            paths = write_report(result, out_dir, top=args.top, rank_by=args.rank_by)
            s = result.summary()
            ref_text = (f"PSNR {s['reference_psnr']:.2f} dB unablated vs GT" if result.has_gt else
                        f"PSNR ceiling {s['reference_psnr']:.2f} dB (identical output)")
            print(f"csm: {name}:{side}: {s['channels']} channels; effective channels "
                  f"{s['effective_channels_attribution']:.1f} (attribution), {s['effective_channels_drop']:.1f} "
                  f"(PSNR drop); {ref_text}, largest drop {s['max_drop']:.3f} dB "
                  f"(channel {int(result.ranking('drop')[0])}); Spearman {s['spearman_attribution_drop']:.2f}")
            for kind, path in paths.items():
                print(f'  {kind:<28} {path}')
    except (CSMError, FileNotFoundError, ValueError) as err:  # SiteError and OptionError are ValueErrors
        message = str(err)
        message = message[len('csm: '):] if message.startswith('csm: ') else message
        print(f"csm: error: {message.replace('regularizer site', 'site', 1)}", file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
