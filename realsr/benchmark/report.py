"""Benchmark reports from ``realsr/test.py`` results folders.

Input: one or more results folders (``results/<name>/``, or their ``metrics_average.csv``) as
:func:`realsr.engine.tester.write_results` writes them: columns ``dataset, images, <metric>...``, one
row per test set (``<Set>_<degradation>`` for the papers' grid), plus ``<set> (bicubic)`` baseline rows,
which are left out here. A set name ending in one of the papers' eight degradation folder names is
split into (dataset, degradation); any other name is a dataset with no degradation.

Outputs (:func:`write_report`):

* ``report.csv``: one row per model; columns ``<dataset>/<degradation> <metric>`` for every set, then
  ``average/<degradation> <metric>`` (mean over that degradation's datasets) and ``average <metric>``
  (mean over all sets of the model). Values are full precision.
* ``report.md``: per metric, a summary (rows models, columns degradations and the average) and one table
  per degradation (rows models, columns datasets and the average); the best value of a column in bold.
* ``chart_<metric>_<degradation>.png``: grouped bars (x: datasets; one colour per model), as the
  Reflash Dropout README's figure, drawn with OpenCV.

:func:`compare_runs` / :func:`format_comparison` give the per-set difference of two runs (B - A).
Averages are plain means of the per-set averages (each set weighs the same, as the papers report).
"""
import csv
import math
import os
from collections import OrderedDict

import numpy as np

from realsr.degradations.testset_protocol import VARIANTS

METRIC_ORDER = ('psnr', 'ssim')
LOWER_IS_BETTER = ('lpips', 'niqe', 'dists', 'brisque', 'pi')
_BY_LENGTH = sorted(VARIANTS, key=len, reverse=True)


class ReportError(ValueError):
    """A results folder that cannot be read, or nothing to report."""


def split_set_name(name):
    """``'BSD100_blur2_bicubic'`` -> ``('BSD100', 'blur2_bicubic')``; ``'Set5'`` -> ``('Set5', '')``."""
    for variant in _BY_LENGTH:
        if name.endswith('_' + variant) and len(name) > len(variant) + 1:
            return name[:-len(variant) - 1], variant
    return name, ''


def _metrics_file(path):
    path = str(path)
    if os.path.isdir(path):
        path = os.path.join(path, 'metrics_average.csv')
    if not os.path.isfile(path):
        raise ReportError(f'{path} does not exist: give a results folder of realsr/test.py '
                          '(results/<name>/, holding metrics_average.csv) or the CSV itself')
    return path


def load_run(path, name=None):
    """``{'model', 'path', 'metrics': [...], 'sets': {set name: {'images': n, metric: value}}}``."""
    csv_path = _metrics_file(path)
    with open(csv_path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if 'dataset' not in fields:
            raise ReportError(f"{csv_path}: no 'dataset' column; is this a metrics_average.csv of realsr/test.py?")
        metrics = [m for m in fields if m not in ('dataset', 'images')]
        sets = OrderedDict()
        for row in reader:
            label = row['dataset']
            if label.endswith(' (bicubic)'):
                continue
            entry = {'images': int(row['images']) if row.get('images') not in (None, '') else None}
            for m in metrics:
                value = row.get(m)
                entry[m] = float(value) if value not in (None, '') else None
            sets[label] = entry
    if not sets:
        raise ReportError(f'{csv_path} holds no test set')
    if name is None:
        folder = os.path.dirname(os.path.abspath(csv_path))
        name = os.path.basename(folder)
    return {'model': str(name), 'path': csv_path, 'metrics': metrics, 'sets': sets}


def _ordered_metrics(names):
    names = list(OrderedDict.fromkeys(names))
    return [m for m in METRIC_ORDER if m in names] + [m for m in names if m not in METRIC_ORDER]


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def build_table(runs, metrics=None):
    """Collect runs into one table: ``{'models', 'metrics', 'sets': [(set, dataset, degradation)],
    'datasets', 'degradations', 'values': {model: {(set, metric): v}}, 'deg_avg': {model: {(deg,
    metric): v}}, 'avg': {model: {metric: v}}}``. Sets keep the first run's order."""
    if not runs:
        raise ReportError('no results to report')
    models = [r['model'] for r in runs]
    dupes = sorted({m for m in models if models.count(m) > 1})
    if dupes:
        raise ReportError(f"two runs are both called {', '.join(dupes)}; give distinct --names")
    metrics = _ordered_metrics(metrics or [m for r in runs for m in r['metrics']])
    set_names = list(OrderedDict.fromkeys(s for r in runs for s in r['sets']))
    sets = [(s,) + split_set_name(s) for s in set_names]
    datasets = list(OrderedDict.fromkeys(d for _, d, _ in sets))
    degradations = list(OrderedDict.fromkeys(g for _, _, g in sets))
    values, deg_avg, avg = {}, {}, {}
    for run in runs:
        vals = {(s, m): run['sets'].get(s, {}).get(m) for s in set_names for m in metrics}
        values[run['model']] = vals
        deg_avg[run['model']] = {(g, m): _mean([vals[(s, m)] for s, _, gg in sets if gg == g])
                                 for g in degradations for m in metrics}
        avg[run['model']] = {m: _mean([vals[(s, m)] for s in set_names]) for m in metrics}
    return {'models': models, 'metrics': metrics, 'sets': sets, 'datasets': datasets,
            'degradations': degradations, 'values': values, 'deg_avg': deg_avg, 'avg': avg}


def _col(dataset, degradation):
    return f'{dataset}/{degradation}' if degradation else dataset


def _cell(v):
    return '' if v is None else repr(float(v))


def write_csv(table, path):
    header = ['model']
    for s, d, g in table['sets']:
        header += [f'{_col(d, g)} {m}' for m in table['metrics']]
    for g in table['degradations']:
        header += [f"average/{g or '-'} {m}" for m in table['metrics']]
    header += [f'average {m}' for m in table['metrics']]
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(header)
        for model in table['models']:
            row = [model]
            for s, _, _ in table['sets']:
                row += [_cell(table['values'][model][(s, m)]) for m in table['metrics']]
            for g in table['degradations']:
                row += [_cell(table['deg_avg'][model][(g, m)]) for m in table['metrics']]
            row += [_cell(table['avg'][model][m]) for m in table['metrics']]
            w.writerow(row)
    return path


def _digits(metric):
    return 4 if metric.lower() in ('ssim', 'ms_ssim', 'lpips', 'dists') else 2


def _md_table(columns, rows, metric):
    """rows: [(model, [value per column])]; the best of each column in bold."""
    better_low = metric.lower() in LOWER_IS_BETTER
    best = []
    for j in range(len(columns)):
        col = [r[1][j] for r in rows if r[1][j] is not None]
        best.append((min(col) if better_low else max(col)) if col and len(rows) > 1 else None)
    lines = ['| model | ' + ' | '.join(columns) + ' |', '|---|' + '---:|' * len(columns)]
    for model, vals in rows:
        cells = []
        for j, v in enumerate(vals):
            text = '' if v is None else f'{v:.{_digits(metric)}f}'
            cells.append(f'**{text}**' if v is not None and v == best[j] else text)
        lines.append(f'| {model} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def markdown(table):
    out = ['# Benchmark report\n', 'Models: ' + ', '.join(table['models']) +
           f". {len(table['sets'])} test set(s). Averages are means over the sets (each set weighs the same).\n"]
    for m in table['metrics']:
        arrow = 'lower is better' if m.lower() in LOWER_IS_BETTER else 'higher is better'
        out.append(f'\n## {m.upper()} ({arrow})\n')
        degs = table['degradations']
        cols = [g or '-' for g in degs] + ['average']
        rows = [(model, [table['deg_avg'][model][(g, m)] for g in degs] + [table['avg'][model][m]])
                for model in table['models']]
        out.append('\n### Average over datasets, per degradation\n\n' + _md_table(cols, rows, m))
        for g in degs:
            sets = [(s, d) for s, d, gg in table['sets'] if gg == g]
            cols = [d for _, d in sets] + ['average']
            rows = [(model, [table['values'][model][(s, m)] for s, _ in sets] + [table['deg_avg'][model][(g, m)]])
                    for model in table['models']]
            out.append(f"\n### {g or 'no degradation named'}\n\n" + _md_table(cols, rows, m))
    return ''.join(out)


# ---------------------------------------------------------------------------------------------
# grouped bar chart (OpenCV; the drawing helpers of the channel saliency tool)
# ---------------------------------------------------------------------------------------------
# BGR, distinguishable and print-friendly (blue, orange, green, red, purple, brown, pink, grey)
PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
           (194, 119, 227), (127, 127, 127)]
CHART_HEIGHT = 460
CHART_MARGINS = (76, 20, 44, 54)  # left, right, top, bottom (legend rows are added to the top)


def _bar_geometry(num_groups, num_series):
    bw = int(min(36, max(8, 720 // max(num_groups * num_series, 1))))
    gap = max(bw, 16)
    return bw, gap, num_series * bw + gap


def grouped_bar_chart(values, groups, series, title, ylabel, xlabel='datasets'):
    """``values[i][j]``: series i (a model) in group j (a dataset); None for missing. Bars start at the
    bottom of a y range fitted to the values (PSNR differences are small next to its size).
    Returns a BGR uint8 image."""
    import cv2

    from realsr.analysis.channel_saliency import BLACK, GREY, LIGHT, _text, _text_width, _vertical_text, nice_ticks

    vals = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = vmax - vmin
    pad = 0.15 * span if span > 0 else max(abs(vmax) * 0.05, 0.01)
    ticks = nice_ticks(vmin - pad, vmax + pad * 0.6)
    y_lo, y_hi = ticks[0], ticks[-1]
    left, right, top, bottom = CHART_MARGINS
    bw, gap, group_w = _bar_geometry(len(groups), len(series))
    # legend: as many entries per row as fit in the plot width
    entry_w = [28 + _text_width(s, 0.42) + 16 for s in series]
    plot_w = max(len(groups) * group_w, 360)
    rows, cur = [[]], 0
    for i, w in enumerate(entry_w):
        if rows[-1] and cur + w > plot_w:
            rows.append([])
            cur = 0
        rows[-1].append(i)
        cur += w
    legend_h = 20 * len(rows) + 4
    width = left + right + plot_w
    height = CHART_HEIGHT + legend_h
    img = np.full((height, width, 3), 255, np.uint8)
    plot_top, plot_bottom = top + legend_h, height - bottom

    def y_of(v):
        return int(round(plot_bottom - (v - y_lo) / (y_hi - y_lo) * (plot_bottom - plot_top)))

    for t in ticks:
        y = y_of(t)
        cv2.line(img, (left, y), (width - right, y), LIGHT, 1)
        label = f'{t:g}'
        _text(img, label, (left - 6 - _text_width(label, 0.4), y + 4), 0.4, GREY)
    x_start = left + (plot_w - len(groups) * group_w) // 2
    for j, group in enumerate(groups):
        gx = x_start + j * group_w + gap // 2
        for i in range(len(series)):
            v = vals[i, j]
            if not np.isfinite(v):
                continue
            x0, y = gx + i * bw, y_of(v)
            cv2.rectangle(img, (x0 + 1, y), (x0 + bw - 2, plot_bottom), PALETTE[i % len(PALETTE)], -1)
            if bw >= 12:
                label = f'{v:.{_digits(ylabel)}f}'
                _vertical_text(img, label, x0 + bw // 2, y - 3, 0.33, BLACK)
        _text(img, group, (gx + (len(series) * bw - _text_width(group, 0.42)) // 2, plot_bottom + 18), 0.42, BLACK)
    cv2.line(img, (left, plot_bottom), (width - right, plot_bottom), BLACK, 1)
    cv2.line(img, (left, plot_top), (left, plot_bottom), BLACK, 1)
    _text(img, title, (left, 24), 0.55, BLACK)
    for r, row in enumerate(rows):
        x = left
        y = 40 + 20 * r
        for i in row:
            cv2.rectangle(img, (x, y - 10), (x + 18, y + 2), PALETTE[i % len(PALETTE)], -1)
            _text(img, series[i], (x + 24, y), 0.42, BLACK)
            x += entry_w[i]
    _text(img, xlabel, (left + (plot_w - _text_width(xlabel, 0.42)) // 2, height - 10), 0.42, GREY)
    middle = plot_top + (plot_bottom - plot_top) // 2
    _vertical_text(img, ylabel, 14, middle + _text_width(ylabel, 0.42) // 2, 0.42, GREY)
    return img


def _safe(name):
    return ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name) or 'none'


def write_charts(table, out_dir, metrics=None):
    """One PNG per (metric, degradation); returns their paths."""
    import cv2
    paths = []
    for m in metrics or table['metrics']:
        for g in table['degradations']:
            sets = [(s, d) for s, d, gg in table['sets'] if gg == g]
            values = [[table['values'][model][(s, m)] for s, _ in sets] for model in table['models']]
            if all(v is None for row in values for v in row):
                continue
            title = f"{m.upper()} on {g or 'the test sets'}"
            img = grouped_bar_chart(values, [d for _, d in sets], table['models'], title, m.upper())
            path = os.path.join(out_dir, f'chart_{_safe(m)}_{_safe(g)}.png')
            if not cv2.imwrite(path, img):
                raise ReportError(f'cannot write {path}')
            paths.append(path)
    return paths


def write_report(runs, out_dir, metrics=None, chart_metrics=None):
    """``report.csv``, ``report.md`` and the charts in ``out_dir``; returns ``{'csv', 'md', 'charts'}``."""
    table = build_table(runs, metrics)
    os.makedirs(out_dir, exist_ok=True)
    csv_path = write_csv(table, os.path.join(out_dir, 'report.csv'))
    md_path = os.path.join(out_dir, 'report.md')
    with open(md_path, 'w', encoding='utf-8') as f:
        f.write(markdown(table))
    charts = write_charts(table, out_dir, chart_metrics)
    return {'csv': csv_path, 'md': md_path, 'charts': charts, 'table': table}


# ---------------------------------------------------------------------------------------------
# two runs, set by set
# ---------------------------------------------------------------------------------------------
def compare_runs(run_a, run_b, metrics=None):
    """Per-set ``{'set', metric: (a, b, b - a)}`` rows over the sets both runs have, then an
    ``'average'`` row over those sets; ``{'rows', 'metrics', 'only_a', 'only_b'}``."""
    metrics = _ordered_metrics(metrics or [m for m in run_a['metrics'] if m in run_b['metrics']])
    if not metrics:
        raise ReportError(f"{run_a['model']} and {run_b['model']} share no metric")
    common = [s for s in run_a['sets'] if s in run_b['sets']]
    if not common:
        raise ReportError(f"{run_a['model']} and {run_b['model']} share no test set")
    rows = []
    for s in common:
        row = {'set': s}
        for m in metrics:
            a, b = run_a['sets'][s].get(m), run_b['sets'][s].get(m)
            row[m] = (a, b, None if a is None or b is None else b - a)
        rows.append(row)
    average = {'set': 'average'}
    for m in metrics:
        a = _mean([r[m][0] for r in rows if r[m][2] is not None])
        b = _mean([r[m][1] for r in rows if r[m][2] is not None])
        average[m] = (a, b, None if a is None or b is None else b - a)
    rows.append(average)
    return {'a': run_a['model'], 'b': run_b['model'], 'metrics': metrics, 'rows': rows,
            'only_a': [s for s in run_a['sets'] if s not in run_b['sets']],
            'only_b': [s for s in run_b['sets'] if s not in run_a['sets']]}


def format_comparison(cmp):
    """A plain-text table: per set and metric A, B and B - A (signed)."""
    header = ['set']
    for m in cmp['metrics']:
        header += [f"{m} A", f"{m} B", f"d{m} (B-A)"]
    body = []
    for row in cmp['rows']:
        cells = [row['set']]
        for m in cmp['metrics']:
            a, b, d = row[m]
            k = _digits(m)
            cells += ['' if a is None else f'{a:.{k}f}', '' if b is None else f'{b:.{k}f}',
                      '' if d is None else f'{d:+.{k}f}']
        body.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]

    def line(cells):
        return '  '.join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"A = {cmp['a']}", f"B = {cmp['b']}", '', line(header), '  '.join('-' * w for w in widths)]
    out += [line(c) for c in body[:-1]] + ['  '.join('-' * w for w in widths), line(body[-1])]
    for key, who in (('only_a', 'A'), ('only_b', 'B')):
        if cmp[key]:
            out.append(f"only in {who}: {', '.join(cmp[key])}")
    return '\n'.join(out) + '\n'


def write_comparison_csv(cmp, path):
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['set'] + [f'{m} {x}' for m in cmp['metrics'] for x in ('A', 'B', 'B-A')])
        for row in cmp['rows']:
            w.writerow([row['set']] + [_cell(v) for m in cmp['metrics'] for v in row[m]])
    return path
