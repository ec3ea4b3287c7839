"""Side-by-side crop comparisons of saved test results (``scripts/compare_crops.py``).

Inputs: results folders of ``realsr/test.py`` (``results/<name>/visualization/<dataset>/<img>_<suffix>.png``,
saved with ``val.save_img: true``), the GT folder of that dataset and, optionally, its LQ folder.
For one image and one crop box ``(x, y, w, h)`` in output (= GT) pixels, :func:`compose` draws one
row: the full GT (scaled to the row height) with the box in red, then the GT crop, the LQ crop and
the bicubic crop (when an LQ folder is given) and each model's crop, all nearest-upscaled by the
same integer ``zoom`` so every pixel stays visible and exact. Under each crop: its label and its PSNR
against the GT, either computed on the crop (``psnr='crop'``, RGB unless ``y_channel``, no border)
or read from the run's ``metrics_per_image.csv`` (``psnr='csv'``: the whole image, with the run's
own metric settings); the label says which.

The GT is cropped top-left to the output size first, as the tester does. Image names are the
saved stems (``baby`` or ``babyx4`` for the ``<name>x4.png`` layout); GT and LQ files are matched
by stem, ignoring a trailing ``x<scale>``.
"""
import csv
import glob
import math
import os
import re

import cv2
import numpy as np

from realsr.metrics.psnr_ssim import calculate_psnr

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
BOX_COLOR = (0, 0, 255)  # BGR red
MARGIN = 8
LABEL_H = 40  # two text lines under each panel
TARGET = 256  # the default zoom brings the crop's longer side up to about this many pixels


class CropError(ValueError):
    """A missing image or folder, or a crop box outside the image."""


def parse_box(text):
    """``'x,y,w,h'`` -> ``(x, y, w, h)`` ints."""
    parts = str(text).replace(' ', '').split(',')
    if len(parts) != 4 or not all(re.fullmatch(r'-?\d+', p) for p in parts):
        raise CropError(f'crop box {text!r} must be x,y,w,h (four integers, output pixels)')
    return tuple(int(p) for p in parts)


def _strip_scale(stem):
    return re.sub(r'x\d+$', '', stem)


def find_image(folder, name, what='image'):
    """The file in ``folder`` whose stem is ``name`` (or equals it up to a trailing ``x<scale>``)."""
    if not os.path.isdir(folder):
        raise CropError(f'{what} folder {folder!r} does not exist')
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMG_EXTENSIONS))
    exact = [f for f in files if os.path.splitext(f)[0] == name]
    loose = [f for f in files if _strip_scale(os.path.splitext(f)[0]) == _strip_scale(name)]
    found = exact or loose
    if len(found) != 1:
        problem = 'no' if not found else f'{len(found)} ({", ".join(found)})'
        raise CropError(f'{what} {name!r}: {problem} matching file(s) in {folder!r}')
    return os.path.join(folder, found[0])


def find_result(run_dir, dataset, name, suffix=None):
    """``<run>/visualization/<dataset>/<name>_<suffix>.png``; the suffix defaults to the run's folder
    name (the tester's default), else the one saved file for ``name``."""
    folder = os.path.join(run_dir, 'visualization', dataset)
    if not os.path.isdir(folder):
        raise CropError(f'{folder!r} does not exist: was {run_dir!r} tested on {dataset!r} with val.save_img: true?')
    wanted = os.path.join(folder, f'{name}_{suffix or os.path.basename(os.path.normpath(run_dir))}.png')
    if os.path.isfile(wanted):
        return wanted
    if suffix:
        raise CropError(f'{wanted!r} does not exist')
    found = sorted(glob.glob(os.path.join(glob.escape(folder), glob.escape(name) + '_*.png')))
    if len(found) != 1:
        names = ', '.join(map(os.path.basename, found))
        problem = f'{len(found)} files ({names}); give the suffix' if found else 'no saved result'
        raise CropError(f'image {name!r} in {folder!r}: {problem}')
    return found[0]


def read_bgr(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)  # grayscale comes back as 3 equal channels, as the datasets read it
    if img is None:
        raise CropError(f'cannot read image {path!r}')
    return img


def csv_psnr(run_dir, dataset, name, metric='psnr'):
    """The run's own value for one image from ``metrics_per_image.csv``."""
    path = os.path.join(run_dir, 'metrics_per_image.csv')
    if not os.path.isfile(path):
        raise CropError(f'{path!r} does not exist (needed for psnr from the CSV)')
    with open(path, newline='', encoding='utf-8') as f:
        for row in csv.DictReader(f):
            if row.get('dataset') == dataset and row.get('image') == name and row.get(metric) not in (None, ''):
                return float(row[metric])
    raise CropError(f'{path!r} has no {metric} for {dataset}/{name}')


def check_box(box, size, name):
    x, y, w, h = box
    height, width = size
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise CropError(f'crop {x},{y},{w},{h} does not fit {name!r} ({width}x{height} output pixels): '
                        f'need x, y >= 0, w, h > 0, x + w <= {width}, y + h <= {height}')


def crop(img, box):
    x, y, w, h = box
    return img[y:y + h, x:x + w]


def zoom_nearest(img, zoom):
    """Nearest-neighbour upscaling by an integer: each pixel becomes a ``zoom x zoom`` block."""
    return np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)


def default_zoom(box):
    return max(1, TARGET // max(box[2], box[3]))


def _fit_text(text, width, scale=0.45):
    from realsr.analysis.channel_saliency import _text_width
    if _text_width(text, scale) <= width:
        return text
    while text and _text_width(text + '..', scale) > width:
        text = text[:-1]
    return text + '..'


def compose(gt, panels, box, zoom=None, title=None):
    """One row: the full GT with the box, then each ``(label, img, psnr_text)`` crop.

    ``gt`` and every panel image must have the output size (H, W, 3), except an ``'LQ'``-style panel
    given as ``(label, img, text, factor)`` whose box is ``box / factor``. Returns ``(canvas,
    layout)``; ``layout``: ``[{'label', 'x', 'y', 'w', 'h'}]`` where each image was pasted.
    """
    from realsr.analysis.channel_saliency import BLACK, GREY, _text

    zoom = int(zoom or default_zoom(box))
    ph, pw = box[3] * zoom, box[2] * zoom
    scale = ph / gt.shape[0]
    full = cv2.resize(gt, (max(1, round(gt.shape[1] * scale)), ph),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
    x, y, w, h = (round(v * scale) for v in box)
    cv2.rectangle(full, (x, y), (x + max(w, 1) - 1, y + max(h, 1) - 1), BOX_COLOR, 2)
    tiles = [('GT (full)', full, f'{gt.shape[1]}x{gt.shape[0]}')]
    for entry in panels:
        label, img, text = entry[:3]
        factor = entry[3] if len(entry) > 3 else 1
        if factor != 1:  # an input at 1/factor size: the same region, zoomed factor times more
            sub = tuple(v // factor for v in box)
            tiles.append((label, zoom_nearest(crop(img, sub), zoom * factor), text))
        else:
            tiles.append((label, zoom_nearest(crop(img, box), zoom), text))
    top = MARGIN + (24 if title else 0)
    width = MARGIN + sum(t[1].shape[1] + MARGIN for t in tiles)
    height = top + max(t[1].shape[0] for t in tiles) + LABEL_H + MARGIN
    canvas = np.full((height, width, 3), 255, np.uint8)
    if title:
        _text(canvas, _fit_text(title, width - 2 * MARGIN, 0.55), (MARGIN, MARGIN + 14), 0.55, BLACK)
    layout, cx = [], MARGIN
    for label, img, text in tiles:
        ih, iw = img.shape[:2]
        canvas[top:top + ih, cx:cx + iw] = img
        below = top + ih
        _text(canvas, _fit_text(label, iw), (cx, below + 16), 0.45, BLACK)
        if text:
            _text(canvas, _fit_text(text, iw), (cx, below + 34), 0.45, GREY)
        layout.append({'label': label, 'x': cx, 'y': top, 'w': iw, 'h': ih})
        cx += iw + MARGIN
    return canvas, layout


def _psnr_text(value, where):
    if value is None:
        return ''
    return f"{'inf' if math.isinf(value) else f'{value:.2f}'} dB ({where})"


def crop_comparison(runs, dataset, name, gt_dir, box, lq_dir=None, names=None, psnr='crop', y_channel=False,
                    zoom=None, suffix=None):
    """Load everything for one image and :func:`compose` it. ``runs``: results folders; ``names``:
    their labels (default: the folder names). Returns ``(canvas, layout, info)``; ``info`` holds the
    PSNR of each labelled crop."""
    if psnr not in ('crop', 'csv'):
        raise CropError(f"psnr must be 'crop' or 'csv', got {psnr!r}")
    names = list(names or [os.path.basename(os.path.normpath(r)) for r in runs])
    if len(names) != len(runs):
        raise CropError('give one name per results folder')
    outputs = [read_bgr(find_result(r, dataset, name, suffix)) for r in runs]
    size = outputs[0].shape[:2]
    for run, out in zip(runs, outputs):
        if out.shape[:2] != size:
            raise CropError(f'{name!r} has size {out.shape[1]}x{out.shape[0]} in {run!r} but '
                            f'{size[1]}x{size[0]} in {runs[0]!r}')
    gt = read_bgr(find_image(gt_dir, name, 'GT'))
    if gt.shape[0] < size[0] or gt.shape[1] < size[1]:
        raise CropError(f'GT {name!r} ({gt.shape[1]}x{gt.shape[0]}) is smaller than the outputs ({size[1]}x{size[0]})')
    gt = gt[:size[0], :size[1]]  # the tester crops the GT top-left to the output size
    check_box(box, size, name)
    gt_crop = crop(gt, box)

    def crop_psnr(img):
        return calculate_psnr(crop(img, box), gt_crop, crop_border=0, test_y_channel=y_channel)

    where = ('crop, Y' if y_channel else 'crop') if psnr == 'crop' else 'image, CSV'
    panels, info = [('GT', gt, '')], {}
    if lq_dir:
        lq = read_bgr(find_image(lq_dir, name, 'LQ'))
        factor = size[0] // lq.shape[0]
        if factor < 1 or lq.shape[0] * factor != size[0] or lq.shape[1] * factor != size[1]:
            raise CropError(f'LQ {name!r} ({lq.shape[1]}x{lq.shape[0]}) is not the outputs ({size[1]}x{size[0]}) '
                            'divided by an integer scale')
        if any(v % factor for v in box):
            raise CropError(f'with an LQ folder the crop box must be a multiple of the scale {factor}, got {box}')
        bicubic = cv2.resize(lq, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        info['bicubic'] = crop_psnr(bicubic)  # no CSV holds it: always on the crop
        panels += [('LQ', lq, f'x{factor} nearest', factor),
                   ('bicubic', bicubic, _psnr_text(info['bicubic'], 'crop, Y' if y_channel else 'crop'))]
    for run, label, out in zip(runs, names, outputs):
        info[label] = crop_psnr(out) if psnr == 'crop' else csv_psnr(run, dataset, name)
        panels.append((label, out, _psnr_text(info[label], where)))
    canvas, layout = compose(gt, panels, box, zoom, title=f'{dataset} / {name}, crop {",".join(map(str, box))}')
    return canvas, layout, info


def write_crop_comparison(out_path, *args, **kwargs):
    canvas, layout, info = crop_comparison(*args, **kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    if not cv2.imwrite(out_path, canvas):
        raise CropError(f'cannot write {out_path!r}')
    return out_path, layout, info
