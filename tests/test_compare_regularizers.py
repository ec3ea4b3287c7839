"""scripts/compare_regularizers.py at a tiny size: 3 iterations, 2 variants, generated images."""
import csv
import importlib.util
import shutil

import torch

from conftest import REPO_ROOT, write_pair_folders
from realsr.utils.yaml_util import yaml_dump, yaml_load


def _script():
    path = REPO_ROOT / 'scripts' / 'compare_regularizers.py'
    spec = importlib.util.spec_from_file_location('compare_regularizers', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_base(tmp_path, folders):
    """The default base (the Real-ESRNet quickstart), shrunk: generated photos, a tiny RRDBNet."""
    opt = yaml_load(REPO_ROOT / 'options' / 'train' / 'realesrnet_quickstart.yml')
    opt.update(num_gpu=0, gt_size=32, queue_size=4)
    opt['datasets']['train'].update(dataroot_gt=folders['train_gt'], num_worker_per_gpu=0, batch_size_per_gpu=2,
                                    crop_pad_size=80, dataset_enlarge_ratio=1)
    opt['network_g'].update(num_feat=4, num_block=1, num_grow_ch=4)
    path = tmp_path / 'base.yml'
    path.write_text(yaml_dump(opt))
    return path


def _tiny_set(tmp_path, folders):
    """A test set laid out as Set5: HR/<name>.png and LR_bicubic/X4/<name>x4.png."""
    root = tmp_path / 'TinySet'
    (root / 'HR').mkdir(parents=True)
    (root / 'LR_bicubic' / 'X4').mkdir(parents=True)
    for hr in sorted((tmp_path / 'data' / 'val' / 'HR').glob('*.png')):
        shutil.copy(hr, root / 'HR' / hr.name)
        shutil.copy(tmp_path / 'data' / 'val' / 'LR_x4' / hr.name, root / 'LR_bicubic' / 'X4' / f'{hr.stem}x4.png')
    return root


def test_compare_two_variants_writes_one_report(tmp_path, monkeypatch, capsys):
    folders = write_pair_folders(tmp_path / 'data', n_train=4, n_val=2, hr_size=48)
    base, test_set, out = _tiny_base(tmp_path, folders), _tiny_set(tmp_path, folders), tmp_path / 'out'
    monkeypatch.chdir(tmp_path)
    assert _script().main(['-opt', str(base), '--iters', '3', '--variants', 'none', 'channel_dropout',
                           '--sets', str(test_set), '--degraded', 'blur2_bicubic', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert '[1/2] none: training' in printed and '[2/2] channel_dropout: done' in printed

    with open(out / 'report.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['model'] for r in rows] == ['none', 'channel_dropout']  # one row per variant
    for r in rows:
        for column in ('TinySet psnr', 'TinySet/blur2_bicubic psnr', 'average ssim'):
            assert float(r[column]) > 0, column

    # the difference against none, per set, in the report and as CSV
    report = (out / 'report.md').read_text()
    assert '## channel_dropout - none' in report and '| TinySet_blur2_bicubic |' in report
    with open(out / 'compare_channel_dropout.csv', newline='') as f:
        diff = {r['set']: r for r in csv.DictReader(f)}
    assert list(diff) == ['TinySet', 'TinySet_blur2_bicubic', 'average']
    a, b, d = (float(diff['TinySet'][f'psnr {k}']) for k in ('A', 'B', 'B-A'))
    assert a == float(rows[0]['TinySet psnr']) and abs(b - a - d) < 1e-9

    # same recipe and seed, only the regularizer differs
    trained = {}
    for variant, regs in (('none', []), ('channel_dropout', ['ChannelDropout'])):
        opt = yaml_load(out / 'options' / f'train_realesrnet_quickstart_x4_{variant}.yml')
        assert [r['type'] for r in opt['regularizers']] == regs and opt['train']['total_iter'] == 3
        assert opt['manual_seed'] == 0 and opt['datasets']['train']['dataroot_gt'] == folders['train_gt']
        ckpt = out / 'experiments' / f'realesrnet_quickstart_x4_{variant}' / 'models' / 'net_g_latest.pth'
        trained[variant] = torch.load(ckpt, weights_only=True)['params']
    assert not torch.equal(trained['none']['conv_last.weight'], trained['channel_dropout']['conv_last.weight'])


def test_adaptive_dropout_variant_fits_its_schedule_into_the_run():
    """On the quickstart's RRDBNet: the RRDB sites, switched off by 68 % of the run as the paper's."""
    script = _script()
    net = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2, 'num_grow_ch': 4}
    (reg, ) = script.VARIANTS['adaptive_dropout'](net, 300)
    assert reg['sites'] == ['body.*.rdb1.conv1:output', 'conv_last:input'] and reg['step'] == 68  # 3 sites
    net = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 4, 'upscale': 4}
    (reg, ) = script.VARIANTS['adaptive_dropout'](net, 1000)
    assert reg['sites'][-1] == 'conv_last:input' and len(reg['sites']) == 5 and reg['step'] == 136
