"""The datasets x degradations grid form of test option files, and benchmark reports.

Grid: the shipped ``options/test/benchmark_grid_x4.yml`` expands to the same 40 dataset blocks as the
Reflash Dropout authors' test file (keys test_01..test_40, names, types, io_backend, order), once its
two path templates are set to the authors' paths (``--force_yml``, the way a user replaces paths);
with the shipped templates the blocks equal the authors' with their path prefix
``/data0/xtkong/data/benchmark/<Set>/HR/x4`` mapped to ``datasets/<Set>/HR`` (and LR likewise).

Report: two fake results folders written with the tester's own ``write_results`` (so the format is
the one ``realsr/test.py`` writes, bicubic baseline rows included).
"""
import copy
import csv
import os

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT
from realsr.option_defs import known_dataset_keys
from realsr.benchmark.grid import expand_dataset_grid, expand_grid
from realsr.benchmark.report import (ReportError, build_table, compare_runs, format_comparison, load_run,
                                     split_set_name, write_report)
from realsr.degradations.testset_protocol import VARIANTS
from realsr.option_schema import OptionError, validate_options
from realsr.options import apply_force_yml, parse_options
from realsr.utils.yaml_util import yaml_load

GRID_FILE = os.path.join(REPO_ROOT, 'options', 'test', 'benchmark_grid_x4.yml')
SEED_TEST = 'reflash_dropout/test_realsrresnet_withdropout.yml'
AUTHOR_ROOT = '/data0/xtkong/data/benchmark'


def _grid_opt():
    return yaml_load(GRID_FILE)


# ---------------------------------------------------------------------------------------------
# grid expansion
# ---------------------------------------------------------------------------------------------
def test_grid_equals_the_papers_40_block_file(seed_options_dir):
    seed = yaml_load(str(seed_options_dir / SEED_TEST))['datasets']
    assert len(seed) == 40
    opt = apply_force_yml(_grid_opt(), [f'datasets_grid:dataroot_gt={AUTHOR_ROOT}/{{folder}}/HR/x4',
                                        f'datasets_grid:dataroot_lq={AUTHOR_ROOT}/{{folder}}/LR_degra/{{degradation}}'])
    expanded = expand_dataset_grid(opt)['datasets']
    assert 'datasets_grid' not in opt
    assert list(expanded) == list(seed)  # test_01 .. test_40, in the papers' order
    assert expanded == seed


def test_shipped_grid_equals_the_papers_file_up_to_the_path_prefix(seed_options_dir):
    seed = yaml_load(str(seed_options_dir / SEED_TEST))['datasets']
    normalised = copy.deepcopy(seed)
    for ds in normalised.values():
        ds['dataroot_gt'] = ds['dataroot_gt'].replace(AUTHOR_ROOT, 'datasets').replace('/HR/x4', '/HR')
        ds['dataroot_lq'] = ds['dataroot_lq'].replace(AUTHOR_ROOT, 'datasets')
    assert expand_dataset_grid(_grid_opt())['datasets'] == normalised


def test_grid_order_names_and_defaults():
    prefix, blocks = expand_grid({'datasets': ['Set5', {'name': 'BSD100', 'folder': 'B100'}],
                                  'degradations': ['bicubic', 'bicubic_jepg50'],
                                  'dataroot_gt': 'd/{folder}/HR', 'dataroot_lq': 'd/{folder}/x{scale}/{degradation}',
                                  'filename_tmpl': '{}x4'}, scale=4)
    assert prefix == 'test'
    assert [b['name'] for b in blocks] == ['Set5_bicubic', 'BSD100_bicubic', 'Set5_bicubic_jepg50',
                                           'BSD100_bicubic_jepg50']
    assert blocks[1] == {'name': 'BSD100_bicubic', 'dataroot_gt': 'd/B100/HR', 'dataroot_lq': 'd/B100/x4/bicubic',
                         'filename_tmpl': '{}x4', 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'}}
    _, by_set = expand_grid({'datasets': ['Set5', 'Set14'], 'degradations': 'all',
                             'dataroot_lq': '{folder}/{degradation}',
                             'order': 'dataset', 'name': '{degradation}@{dataset}'})
    assert [b['name'] for b in by_set[:9]] == [f'{v}@Set5' for v in VARIANTS] + [f'{VARIANTS[0]}@Set14']
    assert by_set[0]['io_backend'] is not by_set[1]['io_backend']  # deep copies


def test_grid_mixed_with_explicit_datasets_and_a_list_of_grids():
    opt = {'name': 'x', 'scale': 4, 'datasets': {'test_1': {'name': 'RealSRSet', 'type': 'SingleImageDataset',
                                                          'dataroot_lq': 'r', 'io_backend': {'type': 'disk'}}},
           'datasets_grid': [{'datasets': ['Set5'], 'degradations': ['bicubic', 'blur2_bicubic'],
                              'dataroot_gt': '{dataset}/HR', 'dataroot_lq': '{dataset}/{degradation}'},
                             {'datasets': ['test2k'], 'degradations': ['bicubic'], 'dataroot_gt': 'b/{dataset}',
                              'dataroot_lq': 'b/{dataset}_{degradation}', 'key_prefix': 'val'}]}
    ds = expand_dataset_grid(opt)['datasets']
    assert list(ds) == ['test_1', 'test_02', 'test_03', 'val_01']
    assert [ds[k]['name'] for k in ds] == ['RealSRSet', 'Set5_bicubic', 'Set5_blur2_bicubic', 'test2k_bicubic']
    assert ds['val_01']['dataroot_lq'] == 'b/test2k_bicubic'
    validate_options({**opt, 'model_type': 'SRModel'}, is_train=False, check_paths=False)
    assert expand_dataset_grid({'datasets': {'a': 1}}) == {'datasets': {'a': 1}}  # no grid: untouched


@pytest.mark.parametrize('change, expected', [
    ({'degradations': ['bicubic', 'blur_bicubic']},
     ["'datasets_grid.degradations[1]': unknown degradation 'blur_bicubic'; did you mean 'blur2_bicubic'? valid: "
      + ', '.join(VARIANTS)]),
    ({'dataroot_lq': 'datasets/{set}/LR_degra/{degradation}'},
     ["'datasets_grid.dataroot_lq': unknown template field(s) {set} in 'datasets/{set}/LR_degra/{degradation}'; "
      "valid: {dataset}, {folder}, {degradation}, {scale}"]),
    ({'name': '{dataset}_{degradation'}, ["'datasets_grid.name': bad template"]),
    ({'datasets': []}, ["'datasets_grid.datasets' must be a non-empty list"]),
    ({'datasets': ['Set5', 'Set5']}, ["'datasets_grid.datasets' lists 'Set5' more than once"]),
    ({'datasets': [{'nom': 'x'}]}, ["'datasets_grid.datasets[0]' must be a name or a mapping"]),
    ({'filename_tmp': '{}x4', 'gt_sise': 1},
     ["unknown key 'datasets_grid.filename_tmp' for PairedImageDataset; did you mean 'filename_tmpl'?",
      "unknown key 'datasets_grid.gt_sise' for PairedImageDataset; did you mean 'gt_size'?"]),
    ({'order': 'random', 'key_prefix': 'train'},
     ["'datasets_grid.order' must be one of degradation, dataset, got 'random'",
      "'datasets_grid.key_prefix' must be one of test, val, got 'train'"]),
])
def test_grid_errors(change, expected):
    opt = _grid_opt()
    opt['datasets_grid'].update(change)
    with pytest.raises(OptionError) as err:
        expand_dataset_grid(opt, dataset_keys=known_dataset_keys)  # as parse_options passes them
    assert len(err.value.problems) == len(expected)
    for problem, want in zip(err.value.problems, expected):
        assert problem.startswith(want), problem


def test_validate_options_checks_an_unexpanded_grid():
    opt = _grid_opt()
    validate_options(copy.deepcopy(opt), is_train=False, check_paths=False)
    opt['datasets_grid']['degradations'] = ['bicubic_jpeg50']
    opt['datasets_grid']['io_backend'] = {'type': 'dsk'}
    with pytest.raises(OptionError) as err:
        validate_options(opt, is_train=False, check_paths=False, source='grid.yml')
    assert err.value.problems == [
        "'datasets_grid.degradations[0]': unknown degradation 'bicubic_jpeg50'; did you mean 'bicubic_jepg50'? "
        'valid: ' + ', '.join(VARIANTS)]
    opt['datasets_grid']['degradations'] = ['bicubic']
    with pytest.raises(OptionError, match=r"'datasets.test_01.io_backend.type' must be one of disk, lmdb"):
        validate_options(opt, is_train=False, check_paths=False)


def test_grid_missing_keys_scale_and_name_clash():
    with pytest.raises(OptionError, match="missing 'degradations'.*\n.*missing 'dataroot_lq'"):
        expand_dataset_grid({'datasets_grid': {'datasets': ['Set5']}})
    with pytest.raises(OptionError, match=r"uses \{scale\} but the file has no top-level 'scale'"):
        expand_dataset_grid({'datasets_grid': {'datasets': ['Set5'], 'degradations': 'all',
                                               'dataroot_lq': '{dataset}/x{scale}/{degradation}'}})
    with pytest.raises(OptionError, match="second test set named 'Set5_bicubic'"):
        expand_dataset_grid({'datasets': {'test_1': {'name': 'Set5_bicubic'}},
                             'datasets_grid': {'datasets': ['Set5'], 'degradations': ['bicubic'],
                                               'dataroot_lq': '{dataset}/{degradation}'}})


def test_parse_options_expands_the_grid_before_validation(tmp_path, monkeypatch):
    for s in ('Set5', 'Set14', 'B100', 'Manga109', 'Urban100'):
        (tmp_path / s / 'HR').mkdir(parents=True)
        for v in VARIANTS:
            (tmp_path / s / 'LR_degra' / v).mkdir(parents=True)
    (tmp_path / 'net.pth').write_bytes(b'')
    monkeypatch.chdir(tmp_path)
    opt, _ = parse_options(str(tmp_path), is_train=False, argv=[
        '-opt', GRID_FILE, '--force_yml', f'datasets_grid:dataroot_gt={tmp_path}/{{folder}}/HR',
        f'datasets_grid:dataroot_lq={tmp_path}/{{folder}}/LR_degra/{{degradation}}',
        f'path:pretrain_network_g={tmp_path}/net.pth', 'num_gpu=0'])
    ds = opt['datasets']
    assert len(ds) == 40 and 'datasets_grid' not in opt
    assert all(d['phase'] == 'test' and d['scale'] == 4 for d in ds.values())
    assert ds['test_40']['dataroot_lq'] == f'{tmp_path}/Urban100/LR_degra/blur2_bicubic_noise20_jepg50'
    # a missing folder is reported by the validator under the expanded key
    (tmp_path / 'Set5' / 'LR_degra' / 'bicubic').rmdir()
    with pytest.raises(OptionError, match=r"'datasets.test_01.dataroot_lq': folder .*Set5/LR_degra/bicubic"):
        parse_options(str(tmp_path), is_train=False, argv=[
            '-opt', GRID_FILE, '--force_yml', f'datasets_grid:dataroot_gt={tmp_path}/{{folder}}/HR',
            f'datasets_grid:dataroot_lq={tmp_path}/{{folder}}/LR_degra/{{degradation}}',
            f'path:pretrain_network_g={tmp_path}/net.pth', 'num_gpu=0'])


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------
SETS = ['Set5_bicubic', 'Set14_bicubic', 'Set5_blur2_bicubic_noise20', 'Set14_blur2_bicubic_noise20']
PSNR_A = [30.0, 27.0, 25.0, 23.0]
PSNR_B = [30.5, 27.25, 26.0, 24.5]
SSIM_A = [0.85, 0.75, 0.70, 0.60]
SSIM_B = [0.86, 0.76, 0.72, 0.64]


def _fake_results(root, name, psnr, ssim, bicubic=False):
    """A results folder as realsr/test.py writes it (its own write_results)."""
    from realsr.engine.tester import write_results
    out = root / name
    out.mkdir(parents=True)
    results = []
    for s, p, q in zip(SETS, psnr, ssim):
        images = [{'name': 'a', 'psnr': p - 1, 'ssim': q}, {'name': 'b', 'psnr': p + 1, 'ssim': q}]
        res = {'dataset': s, 'images': images, 'average': {'psnr': p, 'ssim': q}}
        if bicubic:
            res['bicubic'] = {'psnr': p - 3, 'ssim': q - 0.1}
        results.append(res)
    write_results(results, str(out))
    return out


@pytest.fixture
def two_runs(tmp_path):
    return (_fake_results(tmp_path, 'no_dropout', PSNR_A, SSIM_A, bicubic=True),
            _fake_results(tmp_path, 'with_dropout', PSNR_B, SSIM_B))


def test_split_set_name():
    assert split_set_name('BSD100_blur2_bicubic_noise20_jepg50') == ('BSD100', 'blur2_bicubic_noise20_jepg50')
    assert split_set_name('Set5_bicubic_noise20') == ('Set5', 'bicubic_noise20')
    assert split_set_name('my_set_bicubic') == ('my_set', 'bicubic')
    assert split_set_name('Set5') == ('Set5', '') and split_set_name('bicubic') == ('bicubic', '')


def test_report_shape_and_values(two_runs, tmp_path):
    runs = [load_run(p) for p in two_runs]
    assert list(runs[0]['sets']) == SETS  # the bicubic baseline rows are left out
    out = write_report(runs, str(tmp_path / 'report'))
    t = out['table']
    assert t['models'] == ['no_dropout', 'with_dropout'] and t['metrics'] == ['psnr', 'ssim']
    assert t['datasets'] == ['Set5', 'Set14'] and t['degradations'] == ['bicubic', 'blur2_bicubic_noise20']
    with open(out['csv'], newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['model'] for r in rows] == ['no_dropout', 'with_dropout']
    assert len(rows[0]) == 1 + 2 * 4 + 2 * 2 + 2  # model, sets, per-degradation averages, averages
    b = rows[1]
    assert float(b['Set14/blur2_bicubic_noise20 psnr']) == 24.5
    assert float(b['Set5/bicubic ssim']) == 0.86
    assert float(b['average/bicubic psnr']) == pytest.approx((30.5 + 27.25) / 2)
    assert float(b['average/blur2_bicubic_noise20 ssim']) == pytest.approx((0.72 + 0.64) / 2)
    assert float(b['average psnr']) == pytest.approx(np.mean(PSNR_B))
    assert float(rows[0]['average ssim']) == pytest.approx(np.mean(SSIM_A))
    md = open(out['md']).read()
    assert '## PSNR (higher is better)' in md and '## SSIM (higher is better)' in md
    assert '| model | bicubic | blur2_bicubic_noise20 | average |' in md
    assert f'| with_dropout | **28.88** | **25.25** | **{np.mean(PSNR_B):.2f}** |' in md
    assert f'| no_dropout | 28.50 | 24.00 | {np.mean(PSNR_A):.2f} |' in md
    assert '| no_dropout | 0.8500 | 0.7500 | 0.8000 |' in md  # SSIM on bicubic: Set5, Set14, average


def test_report_charts(two_runs, tmp_path):
    out = write_report([load_run(p) for p in two_runs], str(tmp_path / 'report'))
    names = sorted(os.path.basename(p) for p in out['charts'])
    assert names == ['chart_psnr_bicubic.png', 'chart_psnr_blur2_bicubic_noise20.png', 'chart_ssim_bicubic.png',
                     'chart_ssim_blur2_bicubic_noise20.png']
    img = cv2.imread(os.path.join(tmp_path, 'report', 'chart_psnr_bicubic.png'))
    assert img is not None and 400 < img.shape[0] < 700 and 400 < img.shape[1] < 1200
    # both model colours are drawn, and the with_dropout bars are taller on each dataset
    from realsr.benchmark.report import PALETTE
    plot = img[80:]  # below the title and the legend swatches
    cols = [np.where((plot == np.array(PALETTE[i], np.uint8)).all(-1)) for i in range(2)]
    assert all(len(c[0]) > 500 for c in cols)
    assert cols[1][0].min() < cols[0][0].min()  # the highest bar top belongs to B (Set5: 30.5 > 30.0)


def test_report_many_models_and_a_single_value(tmp_path):
    runs = [{'model': f'model_{i}', 'metrics': ['psnr'], 'sets': {'Set5_bicubic': {'psnr': 30.0}}} for i in range(9)]
    out = write_report(runs, str(tmp_path / 'r'))
    img = cv2.imread(out['charts'][0])
    assert img.shape[0] > 460  # two legend rows
    with pytest.raises(ReportError, match='both called model_0'):
        build_table([runs[0], runs[0]])


def test_compare_prints_the_per_set_difference(two_runs, capsys, tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('benchmark_report', os.path.join(REPO_ROOT, 'scripts',
                                                                                     'benchmark_report.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(['--compare', str(two_runs[0]), str(two_runs[1]), '--out', str(tmp_path / 'c')]) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(('Set', 'average'))}
    assert lines['Set5_bicubic'] == ['Set5_bicubic', '30.00', '30.50', '+0.50', '0.8500', '0.8600', '+0.0100']
    assert lines['Set14_blur2_bicubic_noise20'][3] == '+1.50'
    assert lines['average'][3] == f'{np.mean(PSNR_B) - np.mean(PSNR_A):+.2f}'
    assert (tmp_path / 'c' / 'compare.csv').is_file()
    cmp = compare_runs(load_run(two_runs[0]), load_run(two_runs[1]))
    assert cmp['rows'][0]['psnr'] == (30.0, 30.5, 0.5)
    assert 'A = no_dropout' in format_comparison(cmp)
    # the full report through the command line
    assert cli.main(['--results', str(two_runs[0]), str(two_runs[1]), '--names', 'A', 'B',
                     '--out', str(tmp_path / 'rep')]) == 0
    assert sorted(os.listdir(tmp_path / 'rep'))[:2] == ['chart_psnr_bicubic.png',
                                                        'chart_psnr_blur2_bicubic_noise20.png']
    assert 'wrote' in capsys.readouterr().out
    assert cli.main(['--compare', str(two_runs[0]), str(tmp_path / 'nothing')]) == 2
    assert 'metrics_average.csv' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# end to end: degraded sets -> grid option file -> realsr/test.py -> report
# ---------------------------------------------------------------------------------------------
def test_grid_file_runs_and_reports(tmp_path, datasets_dir, monkeypatch):
    import torch
    import yaml

    from realsr import test as test_entry
    from realsr.degradations.testset_protocol import make_testsets
    from realsr.registry import ARCH_REGISTRY

    make_testsets(datasets_dir / 'Set5' / 'HR', tmp_path / 'Set5' / 'LR_degra', variants=['bicubic', 'bicubic_jepg50'])
    opt = _grid_opt()
    opt['name'] = 'grid_e2e'
    opt['datasets_grid'].update(datasets=['Set5'], degradations=['bicubic', 'bicubic_jepg50'],
                                dataroot_gt=str(datasets_dir / '{folder}' / 'HR'),
                                dataroot_lq=str(tmp_path / '{folder}' / 'LR_degra' / '{degradation}'))
    opt['network_g'] = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}
    opt['num_gpu'] = 0
    torch.manual_seed(0)
    torch.save({'params': ARCH_REGISTRY.get('MSRResNet')(num_feat=8, num_block=1, upscale=4).state_dict()},
               tmp_path / 'net.pth')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'net.pth')
    (tmp_path / 'grid.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    test_entry.main(['-opt', str(tmp_path / 'grid.yml')])
    run = load_run(tmp_path / 'results' / 'grid_e2e')
    assert list(run['sets']) == ['Set5_bicubic', 'Set5_bicubic_jepg50']
    assert all(v['images'] == 5 and 5 < v['psnr'] < 40 and 0 < v['ssim'] < 1 for v in run['sets'].values())
    out = write_report([run], str(tmp_path / 'report'))
    assert len(out['charts']) == 4 and out['table']['degradations'] == ['bicubic', 'bicubic_jepg50']
