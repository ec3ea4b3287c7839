"""Each paper's benchmark grid under options/test/ parses with realsr's option loader and expands
to the papers' sets: every dataroot is moved under a temporary folder (which is created, since the
validator checks folders) through --force_yml, the way a user replaces paths."""
import re

import pytest

from conftest import REPO_ROOT
from realsr.benchmark.grid import expand_grid
from realsr.degradations.testset_protocol import VARIANTS
from realsr.options import load_option_file, parse_options
from realsr.utils.yaml_util import yaml_load, yaml_load_text

OPTIONS = REPO_ROOT / 'options' / 'test'
REFLASH_SETS = ['Set5', 'Set14', 'BSD100', 'Manga109', 'Urban100']


def _parse_in(tmp_path, monkeypatch, filename):
    """parse_options on the shipped file with its dataroots under tmp_path; returns opt['datasets']."""
    grid = load_option_file(str(OPTIONS / filename))['datasets_grid']
    forced = {}
    for key in ('dataroot_gt', 'dataroot_lq'):
        forced[key] = str(tmp_path / re.sub(r'^(\./)?datasets/', '', grid[key]))
    for block in expand_grid({**grid, **forced}, scale=4)[1]:
        for key in forced:
            (tmp_path / block[key]).mkdir(parents=True, exist_ok=True)
    (tmp_path / 'net.pth').write_bytes(b'')
    monkeypatch.chdir(tmp_path)
    opt, _ = parse_options(str(tmp_path), is_train=False, argv=[
        '-opt', str(OPTIONS / filename), '--force_yml', *[f'datasets_grid:{k}={v}' for k, v in forced.items()],
        f'path:pretrain_network_g={tmp_path}/net.pth', 'num_gpu=0'])
    assert 'datasets_grid' not in opt
    return opt['datasets']


def _names(datasets):
    return [d['name'] for d in datasets.values()]


def test_reflash_grid_names_equal_the_papers_test_file(tmp_path, monkeypatch, seed_options_dir):
    seed = yaml_load(str(seed_options_dir / 'reflash_dropout' / 'test_realsrresnet_withdropout.yml'))['datasets']
    ds = _parse_in(tmp_path, monkeypatch, 'benchmark_grid_x4.yml')
    assert list(ds) == list(seed) and _names(ds) == [s['name'] for s in seed.values()]
    assert len(ds) == 40


def test_adaptive_dropout_grid(tmp_path, monkeypatch, seed_options_dir):
    ds = _parse_in(tmp_path, monkeypatch, 'benchmark_grid_adaptive_dropout_x4.yml')
    # no test file in that repository: its names are the Reflash file's (it derives from it) ...
    seed = yaml_load(str(seed_options_dir / 'reflash_dropout' / 'test_realsrresnet_withdropout.yml'))['datasets']
    assert _names(ds) == [s['name'] for s in seed.values()]
    # ... with its own folder for B100, and the sigma-40 sets kept apart from the sigma-20 ones
    assert ds['test_03']['dataroot_gt'].endswith('/BSD100/HR')
    assert ds['test_13']['dataroot_lq'].endswith('/BSD100/LR_degra_noise40/bicubic_noise20')
    # its training file validates on Set5/LR_degra/bicubic: the same set, from the grid
    train = yaml_load(str(seed_options_dir / 'adaptive_dropout' / 'train_realsrresnet_withdropout.yml'))
    assert train['datasets']['val']['dataroot_lq'].endswith('Set5/LR_degra/bicubic')
    assert ds['test_01']['name'] == 'Set5_bicubic'


def test_simple_align_grid_has_48_sets_including_its_validation_sets(tmp_path, monkeypatch, seed_options_dir):
    ds = _parse_in(tmp_path, monkeypatch, 'benchmark_grid_simple_align_x4.yml')
    assert len(ds) == 48  # 6 sets x 8 degradations (spec/test-protocol.md)
    assert sorted(_names(ds)) == sorted(f'{s}_{v}' for s in REFLASH_SETS + ['test2k'] for v in VARIANTS)
    train = yaml_load(str(seed_options_dir / 'simple_align' / 'train_realsrresnet_reg.yml'))
    val_lq = [v['dataroot_lq'] for k, v in train['datasets'].items() if k.startswith('val')]
    assert len(val_lq) == 3
    ours = [d['dataroot_lq'] for d in ds.values()]
    for path in val_lq:  # e.g. .../benchmark/Set5/LR_degra/blur2_bicubic
        tail = '/'.join(path.split('/')[-3:])
        assert sum(p.endswith('/' + tail) for p in ours) == 1, tail


def _uncomment_datasets(text):
    """The DRCT test file with its commented-out test_2..test_5 blocks enabled."""
    head, rest = text.split('datasets:\n', 1)
    body, tail = rest.split('# network structures', 1)
    body = '\n'.join(re.sub(r'^(\s*)# ?', r'\1', line) for line in body.splitlines())
    return head + 'datasets:\n' + body + '\n# network structures' + tail


def test_drct_grid_equals_its_test_file_with_every_set_enabled(tmp_path, monkeypatch, seed_options_dir):
    text = (seed_options_dir / 'drct' / 'test_DRCT_SRx4.yml').read_text()
    seed = yaml_load_text(_uncomment_datasets(text))
    assert len(yaml_load_text(text)['datasets']) == 1 and len(seed['datasets']) == 5
    grid_opt = load_option_file(str(OPTIONS / 'benchmark_grid_drct_x4.yml'))
    _, blocks = expand_grid(grid_opt['datasets_grid'], scale=4)
    assert blocks == list(seed['datasets'].values())  # names, folders, types, order; paths as in DRCT's file
    assert {k: grid_opt[k] for k in ('model_type', 'scale', 'network_g')} == \
        {k: seed[k] for k in ('model_type', 'scale', 'network_g')}
    assert grid_opt['val']['metrics'] == seed['val']['metrics']
    ds = _parse_in(tmp_path, monkeypatch, 'benchmark_grid_drct_x4.yml')
    assert list(ds) == [f'test_0{i}' for i in range(1, 6)]
    assert _names(ds) == ['Set5', 'Set14', 'Urban100', 'BSDS100', 'Manga109']
    assert ds['test_03']['dataroot_lq'] == str(tmp_path / 'urban100' / 'LRbicx4')


@pytest.mark.parametrize('filename, count', [('benchmark_grid_x4.yml', 40),
                                             ('benchmark_grid_adaptive_dropout_x4.yml', 40),
                                             ('benchmark_grid_simple_align_x4.yml', 48),
                                             ('benchmark_grid_drct_x4.yml', 5)])
def test_grid_files_parse_without_the_reference_data(tmp_path, monkeypatch, filename, count):
    text = (OPTIONS / filename).read_text()
    assert text.startswith('#') and ('@' in text or 'Reflash' in text)  # the repository (and commit) it follows
    ds = _parse_in(tmp_path, monkeypatch, filename)
    assert len(ds) == count and len(set(_names(ds))) == count
    assert all(d['phase'] == 'test' and d['scale'] == 4 and d['type'] == 'PairedImageDataset' for d in ds.values())
