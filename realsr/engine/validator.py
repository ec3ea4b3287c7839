"""Validation and testing, sharded across ranks: :class:`Validator` runs a model's ``infer`` image
by image, saves the outputs, computes the metrics, tracks the best value of each metric
(``better: higher|lower``), logs them, and writes the CSV and Markdown tables of realsr-test.

Sharding: with ``world_size > 1`` rank ``r`` validates the images ``r, r + W, r + 2W ...`` of each
set (a disjoint share, nothing padded or repeated) and saves the images it computed. The per-image
records are all-gathered, so EVERY rank gets the same result, ordered by dataset index, the same
averages and the same best-metric record; only rank 0 logs, feeds the scalar sinks and writes
tables. Averages are summed in dataset order, so they equal a single process's. An error on one
rank is gathered too and raised on every rank (no rank is left waiting at the collective).

Best-metric record (resume): ``Validator.state_dict()`` is BasicSR's ``best_metric_results``
(``{dataset: {metric: {'better', 'val', 'iter'}}}``). The trainer stores it in the ``.state`` under
that key and restores it with ``load_state_dict``; it is the same on every rank.
"""
import copy
import csv
import io
import logging
import os

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from realsr.metrics import calculate_metric
from realsr import option_defs as defs
from realsr.option_defs import with_defaults
from realsr.runtime.dist import get_dist_info
from realsr.runtime.rng import preserved_rng
from realsr.utils.atomic_write import write_atomic
from realsr.utils.img_util import imwrite, tensor2img

logger = logging.getLogger('realsr')

NO_REFERENCE_METRICS = ('calculate_niqe', )


def update_best_metric(best, dataset_name, metric, better, value, current_iter):
    """Record ``value`` if it beats the best so far; returns True if it did."""
    record = best.setdefault(dataset_name, {}).setdefault(
        metric, {'better': better, 'val': float('-inf') if better == 'higher' else float('inf'), 'iter': -1})
    improved = value > record['val'] if better == 'higher' else value < record['val']
    if improved:
        record.update(val=value, iter=current_iter)
    return improved


def shard_indices(num_items, rank, world_size):
    """The dataset indices one rank validates: every ``world_size``-th from ``rank`` (disjoint, unpadded)."""
    return list(range(rank, num_items, world_size))


class Validator:
    """Owns ``val.metrics``, the best-metric record, the bicubic-baseline cache and the outputs.

    Args:
        opt (dict): the parsed options (``val``, ``name``, ``is_train``, ``path.visualization``).
        scalar_sinks (iterable): objects with ``add_scalar(tag, value, step)`` (the tensorboard
            logger, ...), fed on rank 0; ``None`` entries are skipped.
    """

    def __init__(self, opt, scalar_sinks=()):
        self.opt = opt
        val_opt = with_defaults(opt, 'val')  # the defaults of realsr/option_defs.py
        self.metrics_opt = val_opt.get('metrics') or {}
        self.use_pbar = val_opt['pbar']
        self.compare_bicubic = val_opt['compare_bicubic']
        self.suffix = val_opt.get('suffix') or opt['name']
        self.scalar_sinks = [sink for sink in scalar_sinks if sink is not None]
        self.best_metric_results = {}
        self.bicubic_baseline = {}  # dataset -> metric averages of bicubic upsampling; computed once

    # -- best-metric record (saved in the training state) -----------------------------------
    def state_dict(self):
        return copy.deepcopy(self.best_metric_results)

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s record (``None``: a state without one starts empty)."""
        self.best_metric_results = copy.deepcopy(state) if state else {}

    # -- validation ----------------------------------------------------------------------------
    def validate_all(self, model, loaders, current_iter, save_img=False):
        """:meth:`validate` on each loader, leaving every random generator as it was."""
        with preserved_rng():  # validation must not change the training randomness
            return [self.validate(model, loader, current_iter, save_img) for loader in loaders]

    def validate(self, model, loader, current_iter, save_img=False):
        """Validate ``model`` (its ``infer``) on one set (a DataLoader or a dataset with ``opt['name']``).

        Returns ``{'dataset': name, 'images': [{'name': ..., metric: value}], 'average': {...}}`` (and
        ``'bicubic'`` with ``val.compare_bicubic``), the same on every rank. Collective under DDP:
        every rank must call it."""
        dataset = getattr(loader, 'dataset', loader)
        dataset_name = dataset.opt['name']
        rank, world_size = get_dist_info()
        need_baseline = self.compare_bicubic and dataset_name not in self.bicubic_baseline
        try:
            local = self._validate_share(model, loader, dataset_name, rank, world_size, current_iter, save_img,
                                         need_baseline)
            failure = None
        except Exception as err:
            if world_size == 1:
                raise
            local, failure = [], err
        shares = _all_gather((local, None if failure is None else f'rank {rank}: {type(failure).__name__}: {failure}'))
        if failure is not None:
            raise failure
        others = [message for _, message in shares if message]
        if others:
            raise RuntimeError(f'validation of {dataset_name} failed on another rank ({"; ".join(others)})')
        entries = sorted((entry for share, _ in shares for entry in share), key=lambda entry: entry[0])
        images = [record for _, record, _ in entries]
        average = {name: sum(r[name] for r in images) / max(len(images), 1) for name in self.metrics_opt}
        baseline_images = [b for _, _, b in entries if b is not None]
        if need_baseline and baseline_images:
            self.bicubic_baseline[dataset_name] = {
                name: sum(r[name] for r in baseline_images) / len(baseline_images) for name in self.metrics_opt}
        for name, value in average.items():
            update_best_metric(self.best_metric_results, dataset_name, name,
                               defs.value(self.metrics_opt[name], defs.METRIC, 'better'), value, current_iter)
        reference = self.bicubic_baseline.get(dataset_name) if self.compare_bicubic else None
        if rank == 0:
            self._log_results(dataset_name, average, current_iter, reference)
        result = {'dataset': dataset_name, 'images': images, 'average': average}
        if reference:
            result['bicubic'] = reference
        return result

    def _validate_share(self, model, loader, dataset_name, rank, world_size, current_iter, save_img, need_baseline):
        """This rank's images: a list of ``(dataset index, record, bicubic record or None)``."""
        dataset = getattr(loader, 'dataset', loader)
        indices = shard_indices(len(dataset), rank, world_size)
        share = DataLoader(Subset(dataset, indices), batch_size=1, shuffle=False,
                           num_workers=getattr(loader, 'num_workers', 0),
                           collate_fn=getattr(loader, 'collate_fn', None))
        entries = []
        # a context manager: an error (e.g. out of memory) must not leave the bar glued to its message
        with tqdm(total=len(indices), unit='image', desc=f'Validate {dataset_name}', leave=False,
                  disable=not self.use_pbar or rank != 0) as pbar:
            for index, data in zip(indices, share):
                img_name = os.path.splitext(os.path.basename(data['lq_path'][0]))[0]
                gt_img = tensor2img(data['gt']) if 'gt' in data else None
                baseline = None
                if need_baseline and gt_img is not None:
                    bicubic = tensor2img(_bicubic_upsample(data['lq'], data['gt'].shape[-2:]))
                    baseline = {name: float(calculate_metric({'img': bicubic, 'img2': gt_img}, mopt))
                                for name, mopt in self.metrics_opt.items()}
                sr_img = tensor2img(model.infer(data['lq']).detach().cpu())
                if save_img:
                    imwrite(sr_img, self._image_path(dataset_name, img_name, current_iter))
                record = {'name': img_name}
                for name, mopt in self.metrics_opt.items():
                    if gt_img is None and mopt['type'] not in NO_REFERENCE_METRICS:
                        raise ValueError(f"val.metrics.{name} ({mopt['type']}) needs ground truth, but dataset "
                                         f"'{dataset_name}' has none (no dataroot_gt); use a no-reference metric "
                                         'such as calculate_niqe or remove the metric for this dataset')
                    record[name] = float(calculate_metric({'img': sr_img, 'img2': gt_img}, mopt))
                entries.append((index, record, baseline))
                pbar.update(1)
                pbar.set_postfix_str(img_name)
        return entries

    def _image_path(self, dataset_name, img_name, current_iter):
        visualization = self.opt['path']['visualization']
        if self.opt.get('is_train'):
            return os.path.join(visualization, img_name, f'{img_name}_{current_iter}.png')
        return os.path.join(visualization, dataset_name, f'{img_name}_{self.suffix}.png')

    def _log_results(self, dataset_name, average, current_iter, reference=None):
        if not average:
            return
        lines = [f'Validation {dataset_name}']
        for name, value in average.items():
            lines.append(f'\t # {name}: {value:.4f}')
            best = self.best_metric_results.get(dataset_name, {}).get(name)
            if best is not None:
                lines[-1] += f'\tBest: {best["val"]:.4f} @ {best["iter"]} iter'
            if reference and name in reference:
                lines[-1] += f'\tBicubic: {reference[name]:.4f} ({value - reference[name]:+.4f})'
            for sink in self.scalar_sinks:
                sink.add_scalar(f'metrics/{dataset_name}/{name}', value, current_iter)
        logger.info('\n'.join(lines))


def _all_gather(obj):
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    _, world_size = get_dist_info()
    if world_size == 1:
        return [obj]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def _bicubic_upsample(lq, size):
    """The bicubic baseline: torch's bicubic (align_corners False), clamped to [0, 1]."""
    with torch.no_grad():
        return F.interpolate(lq, size=tuple(size), mode='bicubic', align_corners=False).clamp_(0, 1)


# -- the tables realsr-test writes --------------------------------------------------------------
def write_results(results, out_dir):
    """``metrics_per_image.csv``, ``metrics_average.csv`` and ``metrics.md`` in ``out_dir`` (each
    written atomically); returns their paths."""
    metric_names = []
    for res in results:
        metric_names += [m for m in res['average'] if m not in metric_names]
    paths = [os.path.join(out_dir, name) for name in ('metrics_per_image.csv', 'metrics_average.csv', 'metrics.md')]
    texts = [_per_image_csv(results, metric_names), _average_csv(results, metric_names),
             _markdown(results, metric_names)]
    for path, text in zip(paths, texts):
        write_atomic(path, text)
    return tuple(paths)


def _per_image_csv(results, metric_names):
    buf = io.StringIO(newline='')
    w = csv.writer(buf)
    w.writerow(['dataset', 'image'] + metric_names)
    for res in results:
        for rec in res['images']:
            w.writerow([res['dataset'], rec['name']] + [_fmt(rec.get(m)) for m in metric_names])
    return buf.getvalue()


def _average_csv(results, metric_names):
    buf = io.StringIO(newline='')
    w = csv.writer(buf)
    w.writerow(['dataset', 'images'] + metric_names)
    for res in results:
        w.writerow([res['dataset'], len(res['images'])] + [_fmt(res['average'].get(m)) for m in metric_names])
        if res.get('bicubic'):  # val.compare_bicubic: the baseline on the same images
            w.writerow([f"{res['dataset']} (bicubic)", len(res['images'])] +
                       [_fmt(res['bicubic'].get(m)) for m in metric_names])
    return buf.getvalue()


def _markdown(results, metric_names):
    lines = ['| dataset | images | ' + ' | '.join(metric_names) + ' |', '|---|---:|' + '---:|' * len(metric_names)]
    for res in results:
        for label, values in ((res['dataset'], res['average']), (f"{res['dataset']} (bicubic)", res.get('bicubic'))):
            if values:
                cells = [f'{values[m]:.4f}' if m in values else '' for m in metric_names]
                lines.append(f"| {label} | {len(res['images'])} | " + ' | '.join(cells) + ' |')
    for res in results:
        lines += ['', f"### {res['dataset']}", '', '| image | ' + ' | '.join(metric_names) + ' |',
                  '|---|' + '---:|' * len(metric_names)]
        for rec in res['images']:
            lines.append(f"| {rec['name']} | " + ' | '.join(f'{rec[m]:.4f}' if m in rec else '' for m in metric_names)
                         + ' |')
    return '\n'.join(lines) + '\n'


def _fmt(value):
    return '' if value is None else repr(float(value))


