"""Compare regularizers on one benchmark: the same base recipe, seed, data and number of iterations,
trained once per regularizer variant, each tested on the same sets, in one report.

    python scripts/compare_regularizers.py [-opt options/train/realesrnet_quickstart.yml] \
        [--variants none channel_dropout adaptive_dropout feature_alignment] [--iters 400] \
        [--sets datasets/Set5 datasets/Set14] [--degraded blur2_bicubic blur2_bicubic_noise20_jepg50] \
        [--out results/compare_regularizers]

Variants (the base file's own ``regularizers:`` are removed first):

* ``none``: no regularizer (the reference every difference is taken against);
* ``channel_dropout``: Reflash Dropout, Dropout2d p 0.7 on the features entering conv_last;
* ``adaptive_dropout``: Adaptive Dropout (q 0.5, p_init 0.3) in every residual block and before
  conv_last (RRDBNet: each block's rdb1.conv1, as options/train/train_AdaptiveDropout_RRDBNet_x4.yml);
  the switch-off step is scaled so that it ends at 68 % of the run, as the paper's 340k of 500k;
* ``feature_alignment``: Simple-Align, weight 1, summed over pairs, at conv_last's input (two views of
  each GT, so twice the LQ inputs per step, as the paper).

A set folder holds ``HR/`` and ``LR_bicubic/X<scale>/<name>x<scale>.png`` (tested as ``<Set>``); each
``--degraded`` variant is made from its HR images once with the dropout papers' protocol
(scripts/make_degraded_testsets.py) under ``<out>/testsets`` and tested as ``<Set>_<variant>``.
Metrics: PSNR and SSIM on Y, border ``scale`` cropped (the papers' protocol), of the EMA weights when
the recipe keeps an EMA; each results folder's metrics_average.csv also has plain bicubic upsampling's.

Writes under ``--out``: ``experiments/<name>_<variant>/`` (training), ``results/<name>_<variant>/``
(realsr/test.py's metrics), ``report.csv``/``report.md``/charts (scripts/benchmark_report.py's
report) with a section per variant on its difference against ``none``, and ``compare_<variant>.csv``.
"""
import argparse
import copy
import os
import sys
import time

try:
    import realsr  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.benchmark.report import (compare_runs, format_comparison, load_run,  # noqa: E402
                                     write_comparison_csv, write_report)
from realsr.degradations.testset_protocol import VARIANTS as TEST_DEGRADATIONS  # noqa: E402
from realsr.utils.yaml_util import yaml_dump, yaml_load  # noqa: E402

DEFAULT_BASE = 'options/train/realesrnet_quickstart.yml'
REFERENCE = 'none'
# the Adaptive Dropout paper switches its last site off at 340k of 500k iterations
ADAPTIVE_SWITCH_OFF_FRACTION = 340000 / 500000
RRDB_ADAPTIVE_SITES = ['body.*.rdb1.conv1:output', 'conv_last:input']


def _adaptive_dropout(network_opt, iters):
    from realsr.archs import build_network
    from realsr.regularizers.dropout import AdaptiveDropout
    net = build_network(copy.deepcopy(network_opt))
    try:
        sites = AdaptiveDropout.default_sites_for(net)
    except ValueError:
        if not any(name.endswith('rdb1.conv1') for name, _ in net.named_modules()):
            raise
        sites = RRDB_ADAPTIVE_SITES
    num_sites = len(AdaptiveDropout(sites=sites).attach(net).attached)
    step = max(1, round(ADAPTIVE_SWITCH_OFF_FRACTION * iters / num_sites))
    return [{'type': 'AdaptiveDropout', 'q': 0.5, 'p_init': 0.3, 'step': step, 'sites': sites}]


VARIANTS = {
    'none': lambda network_opt, iters: [],
    'channel_dropout': lambda network_opt, iters: [
        {'type': 'ChannelDropout', 'p': 0.7, 'mode': 'channel', 'sites': ['conv_last:input']}],
    'adaptive_dropout': _adaptive_dropout,
    'feature_alignment': lambda network_opt, iters: [
        {'type': 'FeatureAlignment', 'weight': 1.0, 'reduction': 'sum', 'sites': ['conv_last:input']}],
}


def training_options(base, variant, iters, out):
    """The base recipe with ``variant``'s regularizers, ``iters`` iterations, no validation during
    training, everything written under ``out``."""
    opt = copy.deepcopy(base)
    opt.pop('weight', None)  # Simple-Align's legacy top-level switch would add a second alignment
    opt['name'] = f"{base['name']}_{variant}"
    opt['regularizers'] = VARIANTS[variant](opt['network_g'], iters)
    opt['datasets'] = {'train': opt['datasets']['train']}  # every variant is tested on the same sets afterwards
    opt.pop('val', None)
    opt['train']['total_iter'] = iters
    opt.setdefault('path', {}).update(experiments_root=os.path.join(out, 'experiments'), resume_state=None)
    logger = opt.setdefault('logger', {})
    logger.update(print_freq=max(1, min(int(logger.get('print_freq', 100)), iters // 10 or 1)),
                  save_checkpoint_freq=iters, use_tb_logger=False)
    logger.pop('wandb', None)
    return opt


def test_sets(sets, degraded, scale, out):
    """``[(set name, gt folder, lq folder, filename template)]``; makes the degraded sets once."""
    from realsr.degradations.testset_protocol import make_testsets
    found = []
    for folder in sets:
        name = os.path.basename(os.path.normpath(folder))
        hr = os.path.join(folder, 'HR')
        # the set's own MATLAB-bicubic LR; not named '_bicubic': the papers' 'bicubic' variant is Pillow's
        found.append((name, hr, os.path.join(folder, 'LR_bicubic', f'X{scale}'), f'{{}}x{scale}'))
        if degraded:
            root = os.path.join(out, 'testsets', name)
            missing = [v for v in degraded if not os.path.isdir(os.path.join(root, v))]
            if missing:
                print(f'making {name} degraded test sets: {" ".join(missing)}', flush=True)
                make_testsets(hr, root, scale=scale, variants=missing)
            found += [(f'{name}_{v}', hr, os.path.join(root, v), '{}') for v in degraded]
    return found


def testing_options(train_opt, sets, out):
    ema = float(train_opt['train'].get('ema_decay') or 0) > 0
    scale = train_opt['scale']
    datasets = {}
    for i, (name, gt, lq, tmpl) in enumerate(sets, 1):
        datasets[f'test_{i}'] = {'name': name, 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
                                 'filename_tmpl': tmpl, 'io_backend': {'type': 'disk'}}
    metrics = {m: {'type': f'calculate_{m}', 'crop_border': scale, 'test_y_channel': True} for m in ('psnr', 'ssim')}
    return {
        'name': train_opt['name'], 'model_type': 'SRModel', 'scale': scale, 'num_gpu': train_opt.get('num_gpu', 'auto'),
        'manual_seed': train_opt.get('manual_seed', 0), 'datasets': datasets, 'network_g': train_opt['network_g'],
        'path': {'pretrain_network_g': os.path.join(train_opt['path']['experiments_root'], train_opt['name'], 'models',
                                                    'net_g_latest.pth'),
                 'param_key_g': 'params_ema' if ema else 'params', 'strict_load_g': True,
                 'results_root': os.path.join(out, 'results')},
        # compare_bicubic: bicubic upsampling's numbers beside each set's, a scale for the others
        'val': {'save_img': False, 'compare_bicubic': True, 'metrics': metrics},
    }


def difference_section(cmp):
    """Markdown: per set and metric, the variant minus ``none``."""
    lines = [f"\n## {cmp['b']} - {cmp['a']}\n", '| set | ' + ' | '.join(f'd{m}' for m in cmp['metrics']) + ' |',
             '|---|' + '---:|' * len(cmp['metrics'])]
    for row in cmp['rows']:
        cells = ['' if row[m][2] is None else f"{row[m][2]:+.{2 if m == 'psnr' else 4}f}" for m in cmp['metrics']]
        label = f"**{row['set']}**" if row['set'] == 'average' else row['set']
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def run(base_file, variants, iters, out, sets, degraded):
    from realsr.engine.tester import test_pipeline
    from realsr.engine.trainer import train_pipeline
    base = yaml_load(base_file)
    iters = int(iters or base['train']['total_iter'])
    out = os.path.abspath(out)
    os.makedirs(os.path.join(out, 'options'), exist_ok=True)
    sets = test_sets(sets, degraded, base['scale'], out)
    runs = {}
    for k, variant in enumerate(variants, 1):
        train_opt = training_options(base, variant, iters, out)
        started = time.time()
        print(f"[{k}/{len(variants)}] {variant}: training {train_opt['name']} for {iters} iterations "
              f"(regularizers: {[r['type'] for r in train_opt['regularizers']] or 'none'})", flush=True)
        train_file = os.path.join(out, 'options', f"train_{train_opt['name']}.yml")
        with open(train_file, 'w', encoding='utf-8') as f:
            f.write(yaml_dump(train_opt))
        train_pipeline(out, ['-opt', train_file])
        print(f'[{k}/{len(variants)}] {variant}: trained in {time.time() - started:.0f} s; testing on '
              f'{", ".join(s[0] for s in sets)}', flush=True)
        test_file = os.path.join(out, 'options', f"test_{train_opt['name']}.yml")
        with open(test_file, 'w', encoding='utf-8') as f:
            f.write(yaml_dump(testing_options(train_opt, sets, out)))
        test_pipeline(out, ['-opt', test_file])
        runs[variant] = load_run(os.path.join(out, 'results', train_opt['name']), variant)
        print(f'[{k}/{len(variants)}] {variant}: done in {time.time() - started:.0f} s', flush=True)

    report = write_report(list(runs.values()), out)
    if REFERENCE in runs:
        sections = []
        for variant in variants:
            if variant != REFERENCE:
                cmp = compare_runs(runs[REFERENCE], runs[variant])
                print(format_comparison(cmp), flush=True)
                write_comparison_csv(cmp, os.path.join(out, f'compare_{variant}.csv'))
                sections.append(difference_section(cmp))
        if sections:
            with open(report['md'], 'a', encoding='utf-8') as f:
                f.write(f'\n# Differences against {REFERENCE} (same recipe, seed, data and {iters} iterations)\n')
                f.writelines(sections)
    print(f"wrote {report['md']} and {report['csv']}", flush=True)
    return report


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('-opt', '--base', default=DEFAULT_BASE, help=f'base training option file (default {DEFAULT_BASE})')
    p.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS), metavar='VARIANT',
                   help=f"regularizer variants, in order (default: {' '.join(VARIANTS)})")
    p.add_argument('--iters', type=int, help="training iterations per variant (default: the base file's total_iter)")
    p.add_argument('--sets', nargs='+', default=['datasets/Set5', 'datasets/Set14'], metavar='DIR',
                   help='test set folders with HR/ and LR_bicubic/X<scale>/ (default: datasets/Set5 datasets/Set14)')
    p.add_argument('--degraded', nargs='*', choices=TEST_DEGRADATIONS,
                   default=['blur2_bicubic', 'blur2_bicubic_noise20_jepg50'], metavar='DEGRADATION',
                   help='degraded versions of each set to test as well; none: only LR_bicubic '
                        '(default: blur2_bicubic blur2_bicubic_noise20_jepg50)')
    p.add_argument('--out', default='results/compare_regularizers', help='output folder')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.iters is not None and args.iters < 1:
        raise SystemExit('error: --iters must be at least 1')
    if len(set(args.variants)) != len(args.variants):
        raise SystemExit('error: --variants lists a variant twice')
    run(args.base, args.variants, args.iters, args.out, args.sets, args.degraded)
    return 0


if __name__ == '__main__':
    sys.exit(main())
