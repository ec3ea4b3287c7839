"""``--dry_run``: every shipped and seed option file passes with its data and weights paths pointed
at tiny temporary files; bad files exit 2 naming the key/file; nothing is ever written."""
import copy
import glob
import os
import subprocess
import sys
import tempfile

import pytest
import torch
import yaml

from conftest import REPO_ROOT, fake_vgg19_weights, write_pair_folders
from realsr.utils.yaml_util import yaml_load
from test_train_e2e import set_dotted, train_options, write_yaml

# -- pointing a file's paths at tiny temporary data ------------------------------------------------
def _write_images(folder, names, size):
    import cv2
    import numpy as np
    os.makedirs(folder, exist_ok=True)
    for name in names:
        cv2.imwrite(os.path.join(folder, name), np.full((size, size, 3), 128, np.uint8))


def _image_folder(root, names, size, lmdb):
    """A folder of tiny images, or an lmdb of them when the file reads lmdb (keys = stems)."""
    if not lmdb:
        _write_images(root, names, size)
        return root
    from realsr.data.lmdb_util import make_lmdb_from_folder
    _write_images(root + '_images', names, size)
    make_lmdb_from_folder(root + '_images', root + '.lmdb')
    return root + '.lmdb'


def _point_dataset(key, ds, root):
    lmdb = (ds.get('io_backend') or {}).get('type') == 'lmdb'
    tmpl = ds.get('filename_tmpl', '{}')
    count = max(3, int(ds.get('batch_size_per_gpu') or 1))  # one batch at least
    gt_names = [f'{i:04d}.png' for i in range(count)]
    lq_names = [f'{tmpl.format(f"{i:04d}")}.png' for i in range(count)]
    if ds.get('dataroot_gt') is not None:
        ds['dataroot_gt'] = _image_folder(os.path.join(root, f'{key}_gt'), gt_names, 32, lmdb)
    if ds.get('dataroot_lq') is not None:
        ds['dataroot_lq'] = _image_folder(os.path.join(root, f'{key}_lq'), lq_names, 8, lmdb)
    for meta_key in ('meta_info', 'meta_info_file'):
        if ds.get(meta_key) is not None:
            meta = os.path.join(root, f'{key}_{meta_key}.txt')
            paired = ds.get('type') == 'RealESRGANPairedDataset' and meta_key == 'meta_info'
            with open(meta, 'w', encoding='utf-8') as f:
                f.writelines(f'{g}, {q}\n' if paired else f'{g}\n' for g, q in zip(gt_names, lq_names))
            ds[meta_key] = meta


def _point_grid(grid, root):
    """Grid templates get a temporary prefix; every folder the grid expands to gets images."""
    from realsr.benchmark.grid import expand_dataset_grid
    grids = grid if isinstance(grid, list) else [grid]
    for i, g in enumerate(grids):
        for k in ('dataroot_gt', 'dataroot_lq'):
            if g.get(k) is not None:
                g[k] = os.path.join(root, f'grid{i}', k, str(g[k]).lstrip('/'))
    expanded = expand_dataset_grid({'datasets_grid': copy.deepcopy(grid), 'datasets': {}})
    for ds in expanded['datasets'].values():
        for k, size in (('dataroot_gt', 32), ('dataroot_lq', 8)):
            if ds.get(k) is not None:
                _write_images(ds[k], ['0000.png', '0001.png'], size)


_STATE_SHAPES = {}


def _state_shapes(net_opt):
    """``{key: (dtype, shape)}`` of a network's state dict, built once per distinct ``network_*`` section."""
    from realsr.engine.dry_run import build_without_memory
    key = yaml.safe_dump(net_opt, sort_keys=True)
    if key not in _STATE_SHAPES:
        state = build_without_memory(net_opt).state_dict()
        _STATE_SHAPES[key] = {k: (v.dtype, tuple(v.shape)) for k, v in state.items()}
    return _STATE_SHAPES[key]


def _write_pretrained(opt, name, path):
    """Weights with the keys and shapes of ``network_<name>``, stored without their bytes (stride 0)."""
    net_opt = opt.get(f'network_{name}')
    shapes = _state_shapes(net_opt) if net_opt is not None else {}
    state = {k: torch.zeros((), dtype=dtype).expand(shape) for k, (dtype, shape) in shapes.items()}
    param_key = (opt.get('path') or {}).get(f'param_key_{name}') or 'params'
    torch.save({param_key: state}, path)


def point_paths_at(opt, root):
    """Rewrite every dataroot_*, meta_info* and path.pretrain_network_* of ``opt`` into ``root``,
    creating the fewest files that make them valid; ``path.resume_state`` is dropped."""
    root = str(root)
    for key, ds in (opt.get('datasets') or {}).items():
        if isinstance(ds, dict):
            _point_dataset(key, ds, root)
    if opt.get('datasets_grid') is not None:
        _point_grid(opt['datasets_grid'], root)
    path = opt.get('path') or {}
    for key in list(path):
        if key.startswith('pretrain_network_') and path[key] is not None:
            path[key] = os.path.join(root, f'{key}.pth')
            _write_pretrained(opt, key[len('pretrain_network_'):], path[key])
    if path.get('resume_state') is not None:
        path['resume_state'] = None
    return opt


# -- running it --------------------------------------------------------------------------------------
def _listing(*folders):
    found = set()
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            found.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return found


def _dry_run_temp_dirs():
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith('realsr-dry-run-')}


def dry_run(opt_file, cwd, monkeypatch, is_train=True):
    """``realsr-train/test -opt <file> --dry_run`` in-process from ``cwd``: returns (exit code, stdout, stderr)
    and asserts that nothing was written in ``cwd``, beside the option file or in a dry-run temp folder."""
    from realsr import test as test_cli
    from realsr import train as train_cli
    monkeypatch.chdir(cwd)
    watched = (str(cwd), os.path.dirname(opt_file))
    before, temp_before = _listing(*watched), _dry_run_temp_dirs()
    code = 0
    try:
        assert (train_cli if is_train else test_cli).main(['-opt', opt_file, '--dry_run']) is None
    except SystemExit as exc:
        code = exc.code
    assert _listing(*watched) == before, 'the dry run wrote files'
    assert _dry_run_temp_dirs() == temp_before, 'the dry run left its temporary folder'
    return code


def _is_train_file(path):
    return os.path.basename(path).startswith('train') or f'{os.sep}train{os.sep}' in path


def _check_file_passes(src, tmp_path, monkeypatch, capsys):
    opt = point_paths_at(yaml_load(src), tmp_path / 'data')
    opt_file = write_yaml(tmp_path / os.path.basename(src), opt)
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    code = dry_run(opt_file, cwd, monkeypatch, is_train=_is_train_file(src))
    out, err = capsys.readouterr()
    assert code == 0, f'{src}:\n{err[-3000:]}'
    assert 'OK, no problem found' in out and f"name: {opt['name']}" in out, out[-2000:]
    return out


@pytest.fixture(scope='module')
def _vgg_file(tmp_path_factory):
    return fake_vgg19_weights(tmp_path_factory.mktemp('vgg') / 'vgg19.pth')


@pytest.fixture()
def vgg_weights(_vgg_file, monkeypatch):
    """Perceptual losses find (random) VGG weights: one file for the module, not one per test."""
    monkeypatch.setenv('REALSR_VGG_WEIGHTS', _vgg_file)


SHIPPED = sorted(glob.glob(str(REPO_ROOT / 'options' / 'train' / '*.yml')) +
                 glob.glob(str(REPO_ROOT / 'options' / 'test' / '*.yml')))


@pytest.mark.parametrize('src', SHIPPED, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_shipped_option_file_passes(src, tmp_path, monkeypatch, capsys, vgg_weights):
    _check_file_passes(src, tmp_path, monkeypatch, capsys)


def _seed_files():
    from conftest import SHARED_DIR
    return sorted(glob.glob(str(SHARED_DIR / 'reference' / 'seed_options' / '*' / '*.yml')))


@pytest.mark.parametrize('name', [os.path.relpath(p, os.path.dirname(os.path.dirname(p))) for p in _seed_files()]
                         or ['(../shared absent)'])
def test_seed_option_file_passes(name, seed_options_dir, tmp_path, monkeypatch, capsys, vgg_weights):
    _check_file_passes(str(seed_options_dir / name), tmp_path, monkeypatch, capsys)


def test_quickstart_unchanged_writes_no_default_data(tmp_path, monkeypatch, capsys):
    """The quickstart's photos would be written to ./datasets on first use; a dry run only checks a
    temporary copy and removes it."""
    code = dry_run(str(REPO_ROOT / 'options' / 'train' / 'quickstart.yml'), tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0 and 'embedded default photos would be written there' in out
    assert 'dataroot_gt: datasets/skimage_photos/train/HR' in out  # the file's path, not the temporary one
    assert not (tmp_path / 'datasets').exists()


def test_resolved_options_show_defaults_and_what_would_be_used(tmp_path, monkeypatch, capsys, pair_folders):
    opt = train_options(pair_folders, 'resolved', num_gpu=8)
    del opt['logger']['print_freq']
    code = dry_run(write_yaml(tmp_path / 'o.yml', opt), tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'print_freq: 100' in out  # BasicSR's default, filled in
    assert 'would use 8 GPU(s)' in out  # no GPU here, and no error for it in a dry run
    assert 'datasets.train: 8 images' in out and 'network_g: MSRResNet' in out
    # the defaults that readers apply (fill=False) are listed as comments, so the YAML still loads back
    applied = out[out.index('# Defaults applied where these keys are read'):out.index('# realsr --dry_run')]
    assert '#   datasets.train.accum_iter: 1\n' in applied and '#   train.grad_clip: false\n' in applied
    assert '#   datasets.val.filename_tmpl: "{}"\n' in applied  # a PairedImageDataset key, JSON-quoted
    assert 'datasets.val.use_hflip' not in applied  # a training key: a val block may not set it
    assert 'resize_prob' not in applied  # degradation keys only for on-the-fly training data


# -- bad files: exit 2, every problem named --------------------------------------------------------
def _bad(opt, tmp_path, monkeypatch, capsys, is_train=True):
    code = dry_run(write_yaml(tmp_path / 'bad.yml', opt), tmp_path, monkeypatch, is_train=is_train)
    captured = capsys.readouterr()
    assert code == 2, captured.out[-2000:] + captured.err[-2000:]
    return captured.err


def test_misspelled_key_exits_2_naming_it(tmp_path, monkeypatch, capsys, pair_folders):
    opt = train_options(pair_folders, 'bad')
    opt['train']['optim_g']['lrr'] = opt['train']['optim_g'].pop('lr')
    err = _bad(opt, tmp_path, monkeypatch, capsys)
    assert "'train.optim_g.lrr'" in err


def test_missing_data_folder_exits_2_naming_it(tmp_path, monkeypatch, capsys, pair_folders):
    opt = train_options(pair_folders, 'bad', **{'datasets.val.dataroot_gt': str(tmp_path / 'nope')})
    err = _bad(opt, tmp_path, monkeypatch, capsys)
    assert "'datasets.val.dataroot_gt'" in err and 'nope' in err


def test_unpaired_gt_exits_2_naming_the_image(tmp_path, monkeypatch, capsys, pair_folders):
    os.remove(os.path.join(pair_folders['train_lq'], 'img03.png'))
    err = _bad(train_options(pair_folders, 'bad'), tmp_path, monkeypatch, capsys)
    assert "'datasets.train'" in err and 'img03.png' in err


def test_batch_larger_than_the_data_exits_2(tmp_path, monkeypatch, capsys, pair_folders):
    opt = train_options(pair_folders, 'bad', **{'datasets.train.batch_size_per_gpu': 64})
    err = _bad(opt, tmp_path, monkeypatch, capsys)
    assert "'datasets.train.batch_size_per_gpu'" in err


def _small_net_weights(path, **changes):
    from realsr.archs import build_network
    state = build_network({'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4}).state_dict()
    for key, value in changes.items():
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    torch.save({'params': state}, path)
    return str(path)


def test_pretrained_with_wrong_keys_exits_2_naming_file_and_keys(tmp_path, monkeypatch, capsys, pair_folders):
    weights = _small_net_weights(tmp_path / 'w.pth', **{'conv_first.bias': None, 'conv_frist.weight': torch.zeros(1)})
    opt = train_options(pair_folders, 'bad', **{'path.pretrain_network_g': weights})
    err = _bad(opt, tmp_path, monkeypatch, capsys)
    assert "'path.pretrain_network_g'" in err and 'w.pth' in err
    assert 'missing keys: conv_first.bias' in err and 'unexpected keys: conv_frist.weight' in err


def test_pretrained_with_wrong_shapes_is_strict_only_when_asked(tmp_path, monkeypatch, capsys, pair_folders):
    weights = _small_net_weights(tmp_path / 'w.pth', **{'conv_last.weight': torch.zeros(3, 8, 1, 1)})
    opt = train_options(pair_folders, 'bad', **{'path.pretrain_network_g': weights})
    err = _bad(opt, tmp_path, monkeypatch, capsys)
    assert 'conv_last.weight (3, 8, 1, 1) vs (3, 8, 3, 3)' in err
    opt['path']['strict_load_g'] = False  # BasicSR skips what does not fit
    assert dry_run(write_yaml(tmp_path / 'ok.yml', opt), tmp_path, monkeypatch) == 0


def test_every_problem_at_once_in_one_exit(tmp_path, monkeypatch, capsys, pair_folders):
    weights = _small_net_weights(tmp_path / 'w.pth', **{'conv_first.bias': None})
    os.remove(os.path.join(pair_folders['val_lq'], 'img01.png'))
    opt = train_options(pair_folders, 'bad', **{'path.pretrain_network_g': weights})
    err = _bad(opt, tmp_path, monkeypatch, capsys)
    assert "'datasets.val'" in err and "'path.pretrain_network_g'" in err and '2 problem(s)' in err


def test_nccl_on_a_cpu_launch_exits_2(tmp_path, monkeypatch, capsys, pair_folders):
    opt = train_options(pair_folders, 'bad')
    opt['dist_params'] = {'backend': 'nccl'}
    opt_file = write_yaml(tmp_path / 'bad.yml', opt)
    from realsr import train as train_cli
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train_cli.main(['-opt', opt_file, '--dry_run', '--launcher', 'pytorch'])
    assert exc.value.code == 2 and 'dist_params.backend' in capsys.readouterr().err


def test_test_file_with_missing_weights_exits_2(tmp_path, monkeypatch, capsys, pair_folders):
    opt = {'name': 't', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0,
           'datasets': {'test_1': {'name': 'v', 'type': 'PairedImageDataset', 'dataroot_gt': pair_folders['val_gt'],
                                   'dataroot_lq': pair_folders['val_lq'], 'io_backend': {'type': 'disk'}}},
           'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4},
           'path': {'pretrain_network_g': str(tmp_path / 'absent.pth')}}
    err = _bad(opt, tmp_path, monkeypatch, capsys, is_train=False)
    assert "'path.pretrain_network_g'" in err and 'absent.pth' in err


def test_command_line_exit_status(tmp_path):
    """The real command line (one subprocess: the others run in-process): a bad file exits 2 with
    the key named on stderr, and nothing is written."""
    folders = write_pair_folders(tmp_path / 'data', n_train=4, n_val=1)
    bad = write_yaml(tmp_path / 'bad.yml', train_options(folders, 'bad', **{'train.total_itr': 5}))
    before = _listing(str(tmp_path))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / 'realsr' / 'train.py'), '-opt', bad, '--dry-run'],
                          cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "'train.total_itr'" in proc.stderr, proc.stderr[-3000:]
    assert _listing(str(tmp_path)) == before


@pytest.mark.parametrize('cli', ['train', 'test'])
def test_console_scripts_exit_0_after_a_run(cli, monkeypatch):
    """setup.py's realsr-train/realsr-test call sys.exit(console_main()): main returns the model or
    the results, which sys.exit would print and turn into status 1."""
    import importlib
    module = importlib.import_module(f'realsr.{cli}')
    monkeypatch.setattr(module, 'main', lambda argv=None: object())
    assert module.console_main() == 0
    with open(REPO_ROOT / 'setup.py', encoding='utf-8') as f:
        assert f"'realsr-{cli}=realsr.{cli}:console_main'" in f.read()


def test_damaged_resume_state_exits_2_naming_it(tmp_path, monkeypatch, capsys, pair_folders):
    state = tmp_path / 'cut.state'
    state.write_bytes(b'PK\x03\x04 not a whole checkpoint')
    opt = train_options(pair_folders, 'bad', **{'path.resume_state': str(state)})
    err = _bad(opt, tmp_path, monkeypatch, capsys)
    assert "'path.resume_state'" in err and 'cut.state' in err


def _experiment_with_state_at_4(tmp_path):
    """experiments/again with a resumable state and weights of iteration 4."""
    exp = tmp_path / 'experiments' / 'again'
    (exp / 'training_states').mkdir(parents=True)
    (exp / 'models').mkdir()
    torch.save({'iter': 4, 'epoch': 1, 'optimizers': [], 'schedulers': []}, exp / 'training_states' / '4.state')
    _small_net_weights(exp / 'models' / 'net_g_4.pth')
    return exp


def test_auto_resume_says_which_state(tmp_path, monkeypatch, capsys, pair_folders):
    exp = _experiment_with_state_at_4(tmp_path)
    from realsr import train as train_cli
    monkeypatch.chdir(tmp_path)
    before = _listing(str(tmp_path))
    opt_file = str(exp.parent.parent / 'again.yml')
    write_yaml(tmp_path / 'again.yml', train_options(pair_folders, 'again'))
    assert train_cli.main(['-opt', opt_file, '--dry_run', '--auto_resume']) is None
    out = capsys.readouterr().out
    assert f"--auto_resume: would resume from {exp / 'training_states' / '4.state'} (iteration 4)" in out
    assert _listing(str(tmp_path)) == before | {opt_file}  # no archive of the experiment, no log


def _drop(opt, dotted):
    *parents, last = dotted.split('.')
    node = opt
    for key in parents:
        node = node[key]
    del node[last]
    return opt


@pytest.mark.parametrize('change, key', [
    (lambda o: set_dotted(o, {'train.optim_g.lr': '2e-4x'}), "'train.optim_g.lr'"),
    (lambda o: set_dotted(o, {'val.val_freq': 0}), "'val.val_freq'"),
    (lambda o: set_dotted(o, {'train.total_iter': 0}), "'train.total_iter'"),
    (lambda o: set_dotted(o, {'train.total_iter': -5}), "'train.total_iter'"),
    (lambda o: set_dotted(o, {'datasets.train.gt_size': 30}), "'datasets.train.gt_size'"),
    (lambda o: _drop(o, 'val.metrics.ssim.crop_border'), "'val.metrics.ssim'"),
    (lambda o: _drop(o, 'val.val_freq'), "'val.val_freq'"),
    (lambda o: o['train'].update(pixle_opt=o['train'].pop('pixel_opt')), "'train.pixle_opt'"),
    (lambda o: o.update(network_g={'type': 'SwinIR', 'upscale': 4, 'windw_size': 8}), "'network_g.windw_size'"),
], ids=['lr', 'val_freq', 'total_iter_0', 'total_iter_neg', 'gt_size', 'crop_border', 'no_val_freq', 'pixle_opt',
        'windw_size'])
def test_the_issues_bad_values_exit_2_naming_the_key(change, key, tmp_path, monkeypatch, capsys, pair_folders):
    """The values of issue 13 that used to fail hours into a run (or never)."""
    opt = train_options(pair_folders, 'bad')
    change(opt)
    assert key in _bad(opt, tmp_path, monkeypatch, capsys)


def test_auto_resume_dry_run_skips_what_the_run_would_skip(tmp_path, monkeypatch, capsys, pair_folders):
    """--dry_run --auto_resume picks the checkpoint the run would: a truncated newest state is skipped and named."""
    exp = _experiment_with_state_at_4(tmp_path)
    (exp / 'training_states' / '8.state').write_bytes(b'PK\x03\x04 cut by a kill')
    _small_net_weights(exp / 'models' / 'net_g_8.pth')
    from realsr import train as train_cli
    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path / 'again.yml', train_options(pair_folders, 'again'))
    assert train_cli.main(['-opt', str(tmp_path / 'again.yml'), '--dry_run', '--auto_resume']) is None
    out = capsys.readouterr().out
    assert '--auto_resume would skip: ' in out and '8.state is unreadable' in out
    assert f"--auto_resume: would resume from {exp / 'training_states' / '4.state'} (iteration 4)" in out
