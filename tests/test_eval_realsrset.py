"""Evaluating without GT: options/test/test_RealSRSet_noGT.yml run through realsr/test.py on
../shared/datasets/RealSRSet with a tiny random network (paths and the network size replaced with
--force_yml): one x4 output per input photo, and no PSNR/SSIM column in the metrics files."""
import csv

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT

OPT_FILE = str(REPO_ROOT / 'options' / 'test' / 'test_RealSRSet_noGT.yml')
NAME = 'RealSRSet_noGT_SRResNet_x4'
TINY = ['network_g:num_feat=8', 'network_g:num_block=1']
EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')


@pytest.fixture
def tiny_model(tmp_path):
    from realsr.registry import ARCH_REGISTRY
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('MSRResNet_details')(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=4)
    torch.save({'params_ema': net.state_dict()}, tmp_path / 'net.pth')
    return tmp_path / 'net.pth'


def _run(tmp_path, monkeypatch, lq_dir, model, extra=()):
    from realsr import test as test_entry
    monkeypatch.chdir(tmp_path)  # results/ goes here
    test_entry.main(['-opt', OPT_FILE, '--force_yml', f'datasets:test_1:dataroot_lq={lq_dir}',
                     f'path:pretrain_network_g={model}', 'num_gpu=0', *TINY, *extra])
    return tmp_path / 'results' / NAME


def _csv(path):
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_every_photo_gets_one_x4_output_and_no_psnr(tmp_path, monkeypatch, datasets_dir, tiny_model):
    lq_dir = datasets_dir / 'RealSRSet'
    inputs = sorted(p for p in lq_dir.iterdir() if p.suffix.lower() in EXTENSIONS)
    assert len(inputs) == 25
    # NIQE (about a second per output on a CPU) is checked on a few photos below; here only the outputs
    results = _run(tmp_path, monkeypatch, lq_dir, tiny_model, ['val:metrics=~'])
    vis = results / 'visualization' / 'RealSRSet'
    assert sorted(p.name for p in vis.iterdir()) == sorted(f'{p.stem}_{NAME}.png' for p in inputs)
    for p in inputs:
        lq = cv2.imread(str(p), cv2.IMREAD_COLOR)
        out = cv2.imread(str(vis / f'{p.stem}_{NAME}.png'), cv2.IMREAD_UNCHANGED)
        assert out.shape == (4 * lq.shape[0], 4 * lq.shape[1], 3), p.name
    fields, rows = _csv(results / 'metrics_average.csv')
    assert fields == ['dataset', 'images'] and rows == [{'dataset': 'RealSRSet', 'images': '25'}]


def test_the_shipped_metric_is_niqe_only(tmp_path, monkeypatch, datasets_dir, tiny_model):
    # three photos through a meta info file: a JPEG of odd size, the smallest, a non-square one
    names = ['0014.jpg', 'chip.png', '00003.png']
    (tmp_path / 'meta.txt').write_text('\n'.join(names) + '\n')
    results = _run(tmp_path, monkeypatch, datasets_dir / 'RealSRSet', tiny_model,
                   [f'datasets:test_1:meta_info_file={tmp_path}/meta.txt'])
    fields, rows = _csv(results / 'metrics_per_image.csv')
    assert fields == ['dataset', 'image', 'niqe']  # no psnr, no ssim: there is no GT
    assert [r['image'] for r in rows] == ['0014', 'chip', '00003']
    assert all(np.isfinite(float(r['niqe'])) and float(r['niqe']) > 0 for r in rows)
    fields, rows = _csv(results / 'metrics_average.csv')
    assert fields == ['dataset', 'images', 'niqe'] and rows[0]['images'] == '3'
    assert len(list((results / 'visualization' / 'RealSRSet').glob('*.png'))) == 3


def test_a_psnr_metric_without_gt_names_the_problem(tmp_path, monkeypatch, datasets_dir, tiny_model):
    (tmp_path / 'meta.txt').write_text('chip.png\n')
    with pytest.raises(ValueError, match="needs ground truth, but dataset 'RealSRSet' has none"):
        _run(tmp_path, monkeypatch, datasets_dir / 'RealSRSet', tiny_model,
             [f'datasets:test_1:meta_info_file={tmp_path}/meta.txt', 'val:metrics:niqe:type=calculate_psnr'])
