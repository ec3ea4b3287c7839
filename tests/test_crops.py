"""Crop comparison images (realsr/benchmark/crops.py, scripts/compare_crops.py) from fake results
folders laid out as realsr/test.py writes them: visualization/<dataset>/<img>_<run>.png and
metrics_per_image.csv (written with the tester's own write_results)."""
import importlib.util
import os

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT
from realsr.benchmark.crops import (LABEL_H, MARGIN, CropError, crop_comparison, find_image, parse_box,
                                    write_crop_comparison, zoom_nearest)
from realsr.metrics.psnr_ssim import calculate_psnr

DATASET = 'Set5_bicubic'
H, W, SCALE = 40, 48, 4
BOX = (8, 4, 16, 12)


def _write(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def layout(tmp_path):
    """GT/<img>.png (one larger than the outputs, to be cropped top-left), LQ/<img>.png and two runs
    whose outputs are the GT plus noise of different strength."""
    from realsr.engine.tester import write_results
    rng = np.random.default_rng(0)
    gts, runs = {}, []
    for name in ('baby', 'bird'):
        gt = rng.integers(0, 256, (H + 3, W + 5, 3), dtype=np.uint8) if name == 'bird' else \
            rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        gts[name] = gt
        _write(tmp_path / 'GT' / f'{name}.png', gt)
        _write(tmp_path / 'LQ' / f'{name}x4.png', cv2.resize(gt[:H, :W], (W // SCALE, H // SCALE),
                                                             interpolation=cv2.INTER_AREA))
    for run, sigma in (('model_a', 20), ('model_b', 5)):
        records = []
        for name, gt in gts.items():
            out = np.clip(gt[:H, :W] + rng.normal(0, sigma, (H, W, 3)), 0, 255).astype(np.uint8)
            _write(tmp_path / 'results' / run / 'visualization' / DATASET / f'{name}_{run}.png', out)
            records.append({'name': name, 'psnr': 20.0 + sigma})
        write_results([{'dataset': DATASET, 'images': records, 'average': {'psnr': 0.0}}],
                      str(tmp_path / 'results' / run))
        runs.append(str(tmp_path / 'results' / run))
    return tmp_path, runs, gts


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def test_panels_hold_the_exact_zoomed_crops(layout):
    root, runs, gts = layout
    out, lay, info = write_crop_comparison(str(root / 'c' / 'bird.png'), runs, DATASET, 'bird', str(root / 'GT'), BOX,
                                           lq_dir=str(root / 'LQ'))
    img = _read(out)
    zoom = 256 // 16
    labels = [p['label'] for p in lay]
    assert labels == ['GT (full)', 'GT', 'LQ', 'bicubic', 'model_a', 'model_b']
    ph, pw = BOX[3] * zoom, BOX[2] * zoom
    assert all((p['h'], p['w']) == (ph, pw) for p in lay[1:])
    assert lay[0]['h'] == ph and lay[0]['w'] == round(W * ph / H)  # the GT cropped to the outputs, then scaled
    # the row: margins, a title line, the panels, two label lines
    assert img.shape == (MARGIN + 24 + ph + LABEL_H + MARGIN, MARGIN + sum(p['w'] + MARGIN for p in lay), 3)

    def panel(i):
        p = lay[i]
        return img[p['y']:p['y'] + p['h'], p['x']:p['x'] + p['w']]

    x, y, w, h = BOX
    gt = gts['bird'][:H, :W]
    assert np.array_equal(panel(1), zoom_nearest(gt[y:y + h, x:x + w], zoom))
    lq = _read(root / 'LQ' / 'birdx4.png')
    assert np.array_equal(panel(2), zoom_nearest(lq[y // 4:(y + h) // 4, x // 4:(x + w) // 4], zoom * 4))
    for i, run in ((4, 'model_a'), (5, 'model_b')):
        sr = _read(os.path.join(runs[i - 4], 'visualization', DATASET, f'bird_{run}.png'))
        assert np.array_equal(panel(i), zoom_nearest(sr[y:y + h, x:x + w], zoom))
        assert info[run] == pytest.approx(calculate_psnr(sr[y:y + h, x:x + w], gt[y:y + h, x:x + w], 0))
    assert info['model_b'] > info['model_a'] + 6  # less noise, higher PSNR: the values are per model
    # the red box is drawn on the full GT (the random GT has almost no pure red pixel)
    full = panel(0)
    assert ((full[..., 2] == 255) & (full[..., 0] == 0) & (full[..., 1] == 0)).sum() > 2 * (w + h)


def test_psnr_from_the_csv_and_the_y_channel(layout):
    root, runs, _ = layout
    _, _, info = crop_comparison(runs, DATASET, 'baby', str(root / 'GT'), BOX, names=['A', 'B'], psnr='csv')
    assert info == {'A': 40.0, 'B': 25.0}
    _, _, rgb = crop_comparison(runs, DATASET, 'baby', str(root / 'GT'), BOX)
    _, _, y = crop_comparison(runs, DATASET, 'baby', str(root / 'GT'), BOX, y_channel=True)
    assert y['model_a'] != pytest.approx(rgb['model_a'], abs=0.1)


def test_script_writes_one_png_per_image(layout, capsys):
    root, runs, _ = layout
    spec = importlib.util.spec_from_file_location('compare_crops', REPO_ROOT / 'scripts' / 'compare_crops.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = root / 'crops'
    assert cli.main(['--results', *runs, '--dataset', DATASET, '--gt', str(root / 'GT'), '--images', 'baby',
                     'bird@0,0,8,8', '--crop', ','.join(map(str, BOX)), '--zoom', '3', '--out', str(out)]) == 0
    assert sorted(os.listdir(out)) == [f'{DATASET}_baby.png', f'{DATASET}_bird.png']
    assert _read(out / f'{DATASET}_bird.png').shape[0] == MARGIN + 24 + 8 * 3 + LABEL_H + MARGIN
    assert 'model_a' in capsys.readouterr().out
    assert cli.main(['--results', *runs, '--dataset', DATASET, '--gt', str(root / 'GT'), '--images', 'baby',
                     '--out', str(out)]) == 2
    assert "no crop box for 'baby'" in capsys.readouterr().err


@pytest.mark.parametrize('change, message', [
    ({'name': 'cat'}, "image 'cat' in .*: no saved result"),
    ({'dataset': 'Set14_bicubic'}, "Set14_bicubic' does not exist: was .* tested on 'Set14_bicubic'"),
    ({'gt_dir': 'nowhere'}, "GT folder 'nowhere' does not exist"),
    ({'box': (40, 4, 16, 12)}, r"crop 40,4,16,12 does not fit 'baby' \(48x40 output pixels\): .*x \+ w <= 48"),
    ({'box': (8, 4, 0, 12)}, 'does not fit'),
    ({'box': (-1, 4, 8, 8)}, 'does not fit'),
    ({'box': (6, 4, 16, 12), 'lq_dir': 'LQ'}, 'multiple of the scale 4'),
    ({'suffix': 'other'}, r"baby_other.png' does not exist"),
    ({'psnr': 'image'}, "psnr must be 'crop' or 'csv'"),
])
def test_errors_name_the_problem(layout, change, message):
    root, runs, _ = layout
    kw = {'runs': runs, 'dataset': DATASET, 'name': 'baby', 'gt_dir': str(root / 'GT'), 'box': BOX}
    kw.update(change)
    if kw.get('lq_dir'):
        kw['lq_dir'] = str(root / kw['lq_dir'])
    with pytest.raises(CropError, match=message):
        crop_comparison(**kw)


def test_mismatched_sizes_missing_gt_and_ambiguous_names(layout):
    root, runs, _ = layout
    vis = os.path.join(runs[1], 'visualization', DATASET)
    _write(os.path.join(vis, 'baby_model_b.png'), np.zeros((H // 2, W, 3), np.uint8))
    with pytest.raises(CropError, match=r"'baby' has size 48x20 in .*model_b' but 48x40"):
        crop_comparison(runs, DATASET, 'baby', str(root / 'GT'), BOX)
    os.remove(root / 'GT' / 'baby.png')
    with pytest.raises(CropError, match="GT 'baby': no matching file"):
        crop_comparison(runs[:1], DATASET, 'baby', str(root / 'GT'), BOX)
    # a folder name that is not the suffix: the one saved file is used, two are ambiguous
    os.rename(runs[0], root / 'results' / 'renamed')
    renamed = str(root / 'results' / 'renamed')
    assert crop_comparison([renamed], DATASET, 'bird', str(root / 'GT'), BOX)[2]['renamed'] > 0
    _write(os.path.join(renamed, 'visualization', DATASET, 'bird_x.png'), np.zeros((H, W, 3), np.uint8))
    with pytest.raises(CropError, match="2 files .*give the suffix"):
        crop_comparison([renamed], DATASET, 'bird', str(root / 'GT'), BOX)
    with pytest.raises(CropError, match='x,y,w,h'):
        parse_box('1,2,3')
    assert find_image(str(root / 'LQ'), 'bird').endswith('birdx4.png')  # the x4 layout's names
