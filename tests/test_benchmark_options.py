"""The shipped Set5/Set14 test option file runs on the benchmark layout of ../shared/datasets
(HR/ + LR_bicubic/X4/<name>x4.png), with paths replaced through --force_yml."""
import csv
import json

import pytest
import torch

from conftest import REPO_ROOT


def test_set5_set14_option_file(tmp_path, datasets_dir, oracle_dir, monkeypatch):
    from realsr import test as test_entry
    from realsr.registry import ARCH_REGISTRY

    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('MSRResNet')(num_feat=48, num_block=6, upscale=4)  # the quickstart's net
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, tmp_path / 'net.pth')
    monkeypatch.chdir(tmp_path)
    test_entry.main([
        '-opt', str(REPO_ROOT / 'options' / 'test' / 'test_quickstart_Set5_Set14.yml'), '--force_yml',
        f'datasets:test_1:dataroot_gt={datasets_dir}/Set5/HR',
        f'datasets:test_1:dataroot_lq={datasets_dir}/Set5/LR_bicubic/X4',
        f'datasets:test_2:dataroot_gt={datasets_dir}/Set14/HR',
        f'datasets:test_2:dataroot_lq={datasets_dir}/Set14/LR_bicubic/X4',
        f'path:pretrain_network_g={tmp_path}/net.pth', 'num_gpu=0'])
    results = tmp_path / 'results' / 'quickstart_SRResNet_x4_Set5_Set14'
    with open(results / 'metrics_average.csv') as f:
        rows = {r['dataset']: r for r in csv.DictReader(f)}
    assert rows['Set5']['images'] == '5' and rows['Set14']['images'] == '14'
    # the bicubic baseline of the report equals BasicSR's Set5 average on bicubic upsampling
    oracle = json.loads((oracle_dir / 'metrics.json').read_text())['set5_average']['numpy']['crop4_y']
    assert float(rows['Set5 (bicubic)']['psnr']) == pytest.approx(oracle['psnr'], abs=2e-3)
    assert float(rows['Set5 (bicubic)']['ssim']) == pytest.approx(oracle['ssim'], abs=2e-4)
    assert len(list((results / 'visualization' / 'Set14').glob('*.png'))) == 14
