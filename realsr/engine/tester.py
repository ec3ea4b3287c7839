"""Testing: every ``test_*``/``val_*`` dataset of an option file, images saved, metrics
written per image and on average as CSV and as a Markdown table in the results folder."""
import csv
import datetime
import logging
import os

import torch

from realsr.data import build_dataset
from realsr.data.loader import build_dataloader
from realsr.engine.dry_run import run_dry_run
from realsr.runtime.logger import close_file_handlers, get_root_logger
from realsr.models import build_model
from realsr.options import make_exp_dirs, parse_options


def write_results(results, out_dir):
    """``metrics_per_image.csv``, ``metrics_average.csv`` and ``metrics.md``; returns their paths."""
    metric_names = []
    for res in results:
        metric_names += [m for m in res['average'] if m not in metric_names]
    per_image = os.path.join(out_dir, 'metrics_per_image.csv')
    average = os.path.join(out_dir, 'metrics_average.csv')
    markdown = os.path.join(out_dir, 'metrics.md')
    with open(per_image, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['dataset', 'image'] + metric_names)
        for res in results:
            for rec in res['images']:
                w.writerow([res['dataset'], rec['name']] + [_fmt(rec.get(m)) for m in metric_names])
    with open(average, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['dataset', 'images'] + metric_names)
        for res in results:
            w.writerow([res['dataset'], len(res['images'])] + [_fmt(res['average'].get(m)) for m in metric_names])
            if res.get('bicubic'):  # val.compare_bicubic: the baseline on the same images
                w.writerow([f"{res['dataset']} (bicubic)", len(res['images'])] +
                           [_fmt(res['bicubic'].get(m)) for m in metric_names])
    with open(markdown, 'w', encoding='utf-8') as f:
        f.write('| dataset | images | ' + ' | '.join(metric_names) + ' |\n')
        f.write('|---|---:|' + '---:|' * len(metric_names) + '\n')
        for res in results:
            for label, values in ((res['dataset'], res['average']), (f"{res['dataset']} (bicubic)", res.get('bicubic'))):
                if values:
                    cells = [f'{values[m]:.4f}' if m in values else '' for m in metric_names]
                    f.write(f"| {label} | {len(res['images'])} | " + ' | '.join(cells) + ' |\n')
        for res in results:
            f.write(f"\n### {res['dataset']}\n\n| image | " + ' | '.join(metric_names) + ' |\n')
            f.write('|---|' + '---:|' * len(metric_names) + '\n')
            for rec in res['images']:
                f.write(f"| {rec['name']} | " + ' | '.join(
                    f'{rec[m]:.4f}' if m in rec else '' for m in metric_names) + ' |\n')
    return per_image, average, markdown


def _fmt(value):
    return '' if value is None else repr(float(value))


def test_pipeline(root_path, argv=None):
    opt, args = parse_options(root_path, is_train=False, argv=argv)
    if args.dry_run:
        return run_dry_run(opt, args, is_train=False)
    torch.backends.cudnn.benchmark = False  # every test image has its own size: autotuning each is waste
    make_exp_dirs(opt)
    log_file = os.path.join(opt['path']['log'], f"test_{opt['name']}_{datetime.datetime.now():%Y%m%d_%H%M%S}.log")
    logger = get_root_logger(log_file=log_file)
    loaders = []
    for phase, dataset_opt in sorted(opt['datasets'].items()):
        if phase.split('_')[0] not in ('test', 'val'):
            continue
        test_set = build_dataset(dataset_opt)
        loaders.append(build_dataloader(test_set, dataset_opt, opt['num_gpu'], opt['dist']))
        logger.info('Number of test images in %s: %d', dataset_opt['name'], len(test_set))
    model = build_model(opt)
    save_img = (opt.get('val') or {}).get('save_img', False)
    results = []
    for loader in loaders:
        logger.info('Testing %s...', loader.dataset.opt['name'])
        res = model.validation(loader, current_iter=opt['name'], tb_logger=None, save_img=save_img)
        if res is not None:
            results.append(res)
    if results and opt['rank'] == 0:
        paths = write_results(results, opt['path']['results_root'])
        logger.info('Metrics written to %s', ', '.join(paths))
        logging.getLogger('realsr').info('\n' + open(paths[2], encoding='utf-8').read())
    close_file_handlers()
    return results
