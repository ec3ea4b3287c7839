"""Validation and testing on one dataset: run the model image by image, save the outputs,
compute the metrics, track the best value of each metric (``better: higher|lower``)."""
import logging
import os

import torch
from torch.nn import functional as F
from tqdm import tqdm

from realsr.metrics import calculate_metric
from realsr.utils.img_util import imwrite, tensor2img

logger = logging.getLogger('realsr')

_NO_REFERENCE_METRICS = ('calculate_niqe', )


def _better(opt_metric):
    return opt_metric.get('better', 'higher')


def update_best_metric(best, dataset_name, metric, better, value, current_iter):
    """Record ``value`` if it beats the best so far; returns True if it did."""
    record = best.setdefault(dataset_name, {}).setdefault(
        metric, {'better': better, 'val': float('-inf') if better == 'higher' else float('inf'), 'iter': -1})
    improved = value > record['val'] if better == 'higher' else value < record['val']
    if improved:
        record.update(val=value, iter=current_iter)
    return improved


def validate(model, dataloader, current_iter, tb_logger=None, save_img=False):
    """Returns ``{'dataset': name, 'images': [{'name': ..., metric: value}], 'average': {...}}``."""
    opt = model.opt
    dataset_opt = dataloader.dataset.opt
    dataset_name = dataset_opt['name']
    val_opt = opt.get('val') or {}
    metrics_opt = val_opt.get('metrics') or {}
    use_pbar = val_opt.get('pbar', True)
    compare_bicubic = val_opt.get('compare_bicubic', False)
    baseline = getattr(model, 'bicubic_baseline', None)
    if baseline is None:
        baseline = model.bicubic_baseline = {}  # dataset -> metric averages; computed once
    need_baseline = compare_bicubic and dataset_name not in baseline
    baseline_images = []
    images = []
    was_train = model.is_train
    model.is_train = False  # models that degrade GT on the fly take their paired branch
    try:
        pbar = tqdm(total=len(dataloader), unit='image', desc=f'Validate {dataset_name}', disable=not use_pbar,
                    leave=False)
        for data in dataloader:
            img_name = os.path.splitext(os.path.basename(data['lq_path'][0]))[0]
            if need_baseline and 'gt' in data:
                bicubic = _bicubic_upsample(data['lq'], data['gt'].shape[-2:])
                gt_img = tensor2img(data['gt'])
                baseline_images.append({name: float(calculate_metric({'img': tensor2img(bicubic), 'img2': gt_img}, mopt))
                                        for name, mopt in metrics_opt.items()})
            model.feed_data(data)
            model.test()
            visuals = model.get_current_visuals()
            sr_img = tensor2img(visuals['result'])
            gt_img = tensor2img(visuals['gt']) if 'gt' in visuals else None
            # free memory before the next image (large test images on a GPU)
            model.lq = model.output = model.gt = None
            if save_img:
                if opt.get('is_train'):
                    save_path = os.path.join(opt['path']['visualization'], img_name, f'{img_name}_{current_iter}.png')
                else:
                    suffix = val_opt.get('suffix') or opt['name']
                    save_path = os.path.join(opt['path']['visualization'], dataset_name, f'{img_name}_{suffix}.png')
                imwrite(sr_img, save_path)
            record = {'name': img_name}
            for name, mopt in metrics_opt.items():
                if gt_img is None and mopt['type'] not in _NO_REFERENCE_METRICS:
                    raise ValueError(f"val.metrics.{name} ({mopt['type']}) needs ground truth, but dataset "
                                     f"'{dataset_name}' has none (no dataroot_gt); use a no-reference metric such as "
                                     'calculate_niqe or remove the metric for this dataset')
                record[name] = float(calculate_metric({'img': sr_img, 'img2': gt_img}, mopt))
            images.append(record)
            pbar.update(1)
            pbar.set_postfix_str(img_name)
        pbar.close()
    finally:
        model.is_train = was_train
    average = {name: sum(r[name] for r in images) / max(len(images), 1) for name in metrics_opt}
    if baseline_images:
        baseline[dataset_name] = {name: sum(r[name] for r in baseline_images) / len(baseline_images)
                                  for name in metrics_opt}
    for name, value in average.items():
        update_best_metric(model.best_metric_results, dataset_name, name, _better(metrics_opt[name]), value,
                           current_iter)
    reference = baseline.get(dataset_name) if compare_bicubic else None
    _log_results(model, dataset_name, average, current_iter, tb_logger, reference)
    result = {'dataset': dataset_name, 'images': images, 'average': average}
    if reference:
        result['bicubic'] = reference
    return result


def _bicubic_upsample(lq, size):
    """The bicubic baseline: torch's bicubic (align_corners False), clamped to [0, 1]."""
    with torch.no_grad():
        return F.interpolate(lq, size=tuple(size), mode='bicubic', align_corners=False).clamp_(0, 1)


def _log_results(model, dataset_name, average, current_iter, tb_logger, reference=None):
    if not average:
        return
    lines = [f'Validation {dataset_name}']
    for name, value in average.items():
        lines.append(f'\t # {name}: {value:.4f}')
        best = model.best_metric_results.get(dataset_name, {}).get(name)
        if best is not None:
            lines[-1] += f'\tBest: {best["val"]:.4f} @ {best["iter"]} iter'
        if reference and name in reference:
            lines[-1] += f'\tBicubic: {reference[name]:.4f} ({value - reference[name]:+.4f})'
        if tb_logger is not None:
            tb_logger.add_scalar(f'metrics/{dataset_name}/{name}', value, current_iter)
    logger.info('\n'.join(lines))
