"""Option files: YAML loading, whole-file validation with helpful messages, parse_options, exp dirs.

BasicSR's ``parse_options`` behaviour (spec/basicsr-compat.md B.1-B.2): ``!!float``, ``~``,
dataset phases, ``num_gpu: auto|0|N``, scale propagation, experiments/results layout with
archiving, ``--force_yml``, ``--auto_resume``, ``--debug``, ``--launcher``, ``--local_rank`` and
``--local-rank``. Every problem of a file is reported at once, naming the full key path, the value
and the closest valid key or registry names.
"""
import copy
import glob
import os
import re
import sys

import pytest

from realsr.option_schema import OptionError, validate_options
from realsr.options import _datasets, apply_force_yml, copy_opt_file, make_exp_dirs, parse_options
from realsr.utils.yaml_util import yaml_dump, yaml_load

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _train_opt():
    """A small, valid BasicSR train option dict (paths are not checked by the callers using it)."""
    return {
        'name': 'unit_SRResNet_x2',
        'model_type': 'SRModel',
        'scale': 2,
        'num_gpu': 0,
        'manual_seed': 10,
        'datasets': {
            'train': {
                'name': 'toy', 'type': 'PairedImageDataset', 'dataroot_gt': 'data/gt', 'dataroot_lq': 'data/lq',
                'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}, 'gt_size': 32, 'use_hflip': True,
                'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1,
                'prefetch_mode': None,
            },
            'val': {'name': 'toy_val', 'type': 'PairedImageDataset', 'dataroot_gt': 'data/gt',
                    'dataroot_lq': 'data/lq', 'io_backend': {'type': 'disk'}},
            'val_2': {'name': 'toy_val2', 'type': 'SingleImageDataset', 'dataroot_lq': 'data/lq',
                      'io_backend': {'type': 'disk'}},
        },
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0.999,
            'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [10, 20], 'gamma': 0.5},
            'total_iter': 30,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {
            'val_freq': 10, 'save_img': False,
            'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False},
                        'ssim': {'type': 'calculate_ssim', 'crop_border': 2, 'test_y_channel': False}},
        },
        'logger': {'print_freq': 5, 'save_checkpoint_freq': 10, 'use_tb_logger': False},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }


def _problems(opt, is_train=True, check_paths=False):
    """The list of problems validate_options reports (empty if it accepts the file)."""
    try:
        validate_options(opt, is_train=is_train, check_paths=check_paths)
    except OptionError as err:
        assert err.problems, 'an OptionError must list its problems'
        for p in err.problems:  # the message carries every problem
            assert p in str(err)
        return err.problems
    return []


def _one_problem(opt, *needles, is_train=True, check_paths=False):
    """Exactly one problem is reported, and it contains every needle."""
    problems = _problems(opt, is_train=is_train, check_paths=check_paths)
    assert len(problems) == 1, problems
    for needle in needles:
        assert needle in problems[0], (needle, problems[0])
    return problems[0]


def _make_data(tmp_path):
    gt, lq = tmp_path / 'data' / 'gt', tmp_path / 'data' / 'lq'
    gt.mkdir(parents=True)
    lq.mkdir(parents=True)
    return gt, lq


def _write_train_file(tmp_path, mutate=None, fname='train_unit.yml'):
    """A train option file in tmp_path whose dataroots are real folders in tmp_path."""
    gt, lq = _make_data(tmp_path)
    opt = _train_opt()
    for ds in opt['datasets'].values():
        if 'dataroot_gt' in ds:
            ds['dataroot_gt'] = str(gt)
        ds['dataroot_lq'] = str(lq)
    if mutate:
        mutate(opt)
    path = tmp_path / fname
    path.write_text(yaml_dump(opt), encoding='utf-8')
    return str(path)


def _write_test_file(tmp_path, mutate=None):
    gt, lq = _make_data(tmp_path)
    opt = {
        'name': 'unit_test_SRResNet', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0,
        'datasets': {
            'test_1': {'name': 'set_a', 'type': 'PairedImageDataset', 'dataroot_gt': str(gt),
                       'dataroot_lq': str(lq), 'io_backend': {'type': 'disk'}},
            'test_2': {'name': 'set_b', 'type': 'SingleImageDataset', 'dataroot_lq': str(lq),
                       'io_backend': {'type': 'disk'}},
        },
        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2}}},
    }
    if mutate:
        mutate(opt)
    path = tmp_path / 'test_unit.yml'
    path.write_text(yaml_dump(opt), encoding='utf-8')
    return str(path)


def _parse(tmp_path, opt_file, *extra, is_train=True):
    return parse_options(str(tmp_path), is_train=is_train, argv=['-opt', opt_file, '--launcher', 'none', *extra])


# ---------------------------------------------------------------------------------------------
# YAML loading
# ---------------------------------------------------------------------------------------------
def test_yaml_load_floats_none_and_order():
    text = ('lr: !!float 2e-4\n'
            'plain_lr: 2e-4\n'
            'freq: 5e3\n'
            'neg: -1.5E+2\n'
            'nothing: ~\n'
            'integer: 3\n'
            'word: e5\n'
            'z_last: 1\n'
            'a_after: 2\n')
    opt = yaml_load(text)
    assert isinstance(opt['lr'], float) and opt['lr'] == pytest.approx(2e-4)
    assert isinstance(opt['plain_lr'], float) and opt['plain_lr'] == pytest.approx(2e-4)
    assert isinstance(opt['freq'], float) and opt['freq'] == 5000.0
    assert opt['neg'] == -150.0
    assert opt['nothing'] is None
    assert opt['integer'] == 3 and isinstance(opt['integer'], int)
    assert opt['word'] == 'e5'  # not a number
    assert list(opt) == ['lr', 'plain_lr', 'freq', 'neg', 'nothing', 'integer', 'word', 'z_last', 'a_after']


def test_yaml_load_reads_a_path(tmp_path):
    path = tmp_path / 'x.yml'
    path.write_text('train:\n  optim_g:\n    lr: 1e-3\n', encoding='utf-8')
    assert yaml_load(str(path)) == {'train': {'optim_g': {'lr': 1e-3}}}
    assert yaml_load(path) == {'train': {'optim_g': {'lr': 1e-3}}}


# ---------------------------------------------------------------------------------------------
# Files that BasicSR accepts are accepted
# ---------------------------------------------------------------------------------------------
# Registry names of features that are not implemented yet (other issues): the only problems the
# papers' option files may have for now.


def _seed_files(seed_options_dir):
    files = sorted(glob.glob(str(seed_options_dir / '*' / '*.yml')))
    assert len(files) >= 10, files
    return files


def test_seed_option_files_have_no_key_or_type_problems(seed_options_dir):
    seen_folders = set()
    for f in _seed_files(seed_options_dir):
        seen_folders.add(os.path.basename(os.path.dirname(f)))
        opt = yaml_load(f)
        _datasets(opt)  # the parse step: phase from the key, top-level scale copied in
        is_train = os.path.basename(f).startswith('train')
        # every key, value and registered name (arch, model, dataset, loss) of the papers' files is known
        assert _problems(opt, is_train=is_train, check_paths=False) == [], f
    assert {'reflash_dropout', 'simple_align', 'adaptive_dropout', 'cddnet', 'drct', 'real_esrgan'} <= seen_folders


def test_seed_option_files_datasets_get_phase_and_scale(seed_options_dir):
    for f in _seed_files(seed_options_dir):
        opt = yaml_load(f)
        _datasets(opt)
        for key, ds in opt['datasets'].items():
            assert ds['phase'] == key.split('_')[0]
            assert ds['phase'] in ('train', 'val', 'test'), (f, key)
            if 'scale' in opt:
                assert ds['scale'] == opt['scale']


def test_seed_option_floats_load_as_numbers(seed_options_dir):
    for f in _seed_files(seed_options_dir):
        opt = yaml_load(f)
        for name in ('optim_g', 'optim_d'):
            lr = (opt.get('train') or {}).get(name, {}).get('lr')
            if lr is not None:
                assert isinstance(lr, float), (f, name, lr)


def _repo_option_files():
    files = sorted(glob.glob(os.path.join(REPO_ROOT, 'options', 'train', '*.yml')) +
                   glob.glob(os.path.join(REPO_ROOT, 'options', 'test', '*.yml')))
    return files


def test_repo_option_files_are_valid():
    files = _repo_option_files()
    assert any(f.endswith(os.path.join('train', 'quickstart.yml')) for f in files)
    for f in files:
        opt = yaml_load(f)
        _datasets(opt)
        is_train = os.sep + 'train' + os.sep in f
        assert _problems(opt, is_train=is_train, check_paths=False) == [], f


def test_small_valid_options_have_no_problems():
    opt = _train_opt()
    _datasets(opt)
    assert _problems(opt) == []
    # `~` means "not set" for any key
    opt['train']['warmup_iter'] = None
    opt['val']['val_freq'] = None
    assert _problems(opt) == []


def test_basicsr_spellings_are_accepted():
    """Keys and values BasicSR files use: 5e3 frequencies, num_gpu auto, val_N/test_N phases, wandb."""
    opt = _train_opt()
    opt['num_gpu'] = 'auto'
    opt['logger'].update(save_checkpoint_freq=5e3, print_freq=1e2, wandb={'project': None, 'resume_id': None})
    opt['val']['val_freq'] = 5e3
    opt['train']['total_iter'] = 4e5
    opt['datasets']['test_1'] = copy.deepcopy(opt['datasets']['val'])
    opt['datasets']['val_3'] = copy.deepcopy(opt['datasets']['val'])
    opt['find_unused_parameters'] = True
    opt['path']['param_key_g'] = 'params_ema'
    opt['network_d'] = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3}
    opt['model_type'] = 'RealESRGANModel'  # a model that builds network_d (SRModel would never read it)
    _datasets(opt)
    assert _problems(opt) == []


# ---------------------------------------------------------------------------------------------
# Bad files: each message names the key path, the value and the fix
# ---------------------------------------------------------------------------------------------
def test_unknown_top_level_key_suggests_closest():
    opt = _train_opt()
    opt['manual_sed'] = 0
    _one_problem(opt, "unknown key 'manual_sed'", "did you mean 'manual_seed'")


def test_unknown_nested_optimizer_key_names_full_path():
    opt = _train_opt()
    opt['train']['optim_g']['lrr'] = 1e-4
    _one_problem(opt, "'train.optim_g.lrr'", "did you mean 'lr'")


def test_unknown_dataset_key_names_full_path():
    opt = _train_opt()
    opt['datasets']['train']['gt_sise'] = 64
    _one_problem(opt, "'datasets.train.gt_sise'", "did you mean 'gt_size'")


def test_unknown_arch_kwarg_names_full_path():
    opt = _train_opt()
    opt['network_g']['num_feats'] = 64
    _one_problem(opt, "'network_g.num_feats'", "did you mean 'num_feat'")


def test_unknown_loss_kwarg_and_section_keys():
    opt = _train_opt()
    opt['train']['pixel_opt']['los_weight'] = 1.0
    opt['val']['val_frq'] = 10
    opt['logger']['print_frq'] = 10
    problems = _problems(opt)
    assert len(problems) == 3, problems
    text = '\n'.join(problems)
    assert "'train.pixel_opt.los_weight'" in text and "did you mean 'loss_weight'" in text
    assert "'val.val_frq'" in text and "did you mean 'val_freq'" in text
    assert "'logger.print_frq'" in text and "did you mean 'print_freq'" in text


def test_unknown_arch_type_lists_close_names():
    opt = _train_opt()
    opt['network_g']['type'] = 'MSRResNett'
    _one_problem(opt, "'network_g.type'", "'MSRResNett'", 'MSRResNet')


def test_unknown_model_type_lists_close_names():
    opt = _train_opt()
    opt['model_type'] = 'SRModle'
    _one_problem(opt, "'model_type'", "'SRModle'", 'SRModel')


def test_unknown_dataset_type_lists_close_names():
    opt = _train_opt()
    opt['datasets']['val']['type'] = 'PairedImageDatset'
    _one_problem(opt, "'datasets.val.type'", "'PairedImageDatset'", 'PairedImageDataset')


def test_unknown_loss_type_lists_close_names():
    opt = _train_opt()
    opt['train']['pixel_opt']['type'] = 'L1Los'
    _one_problem(opt, "'train.pixel_opt.type'", "'L1Los'", 'L1Loss')


def test_unknown_metric_type_lists_close_names():
    opt = _train_opt()
    opt['val']['metrics']['psnr']['type'] = 'calculate_psnrr'
    _one_problem(opt, "'val.metrics.psnr.type'", "'calculate_psnrr'", 'calculate_psnr')


def test_unknown_metric_kwarg():
    opt = _train_opt()
    opt['val']['metrics']['psnr']['crop_boder'] = 4
    _one_problem(opt, "'val.metrics.psnr.crop_boder'", "did you mean 'crop_border'")


def test_unknown_optimizer_lists_close_names():
    opt = _train_opt()
    opt['train']['optim_g']['type'] = 'Adamm'
    _one_problem(opt, "'train.optim_g.type'", "'Adamm'", 'Adam')


def test_unknown_scheduler_lists_close_names():
    opt = _train_opt()
    opt['train']['scheduler']['type'] = 'MultiStepLRR'
    _one_problem(opt, "'train.scheduler.type'", "'MultiStepLRR'", 'MultiStepLR')


def test_scheduler_kwarg_checked():
    opt = _train_opt()
    opt['train']['scheduler']['milestone'] = [10]
    problems = _problems(opt)
    assert any("'train.scheduler.milestone'" in p and "did you mean 'milestones'" in p for p in problems), problems


def test_wrong_type_names_key_and_value():
    opt = _train_opt()
    opt['train']['total_iter'] = 'abc'
    _one_problem(opt, "'train.total_iter'", 'integer', "'abc'")


def test_wrong_type_in_dataset_and_bool():
    opt = _train_opt()
    opt['datasets']['train']['batch_size_per_gpu'] = 'eight'
    opt['datasets']['train']['use_hflip'] = 'yes please'
    problems = _problems(opt)
    assert len(problems) == 2, problems
    text = '\n'.join(problems)
    assert "'datasets.train.batch_size_per_gpu'" in text and "'eight'" in text
    assert "'datasets.train.use_hflip'" in text and "'yes please'" in text


def test_num_gpu_word_is_rejected():
    opt = _train_opt()
    opt['num_gpu'] = 'two'
    _one_problem(opt, "'num_gpu'", "'auto'", "'two'")


def test_dataset_key_must_start_with_a_phase():
    opt = _train_opt()
    opt['datasets']['evaluation'] = opt['datasets'].pop('val')
    _one_problem(opt, "'datasets.evaluation'", 'train, val or test', "'evaluation'")


def test_missing_train_dataset_and_sections():
    opt = _train_opt()
    del opt['datasets']['train']
    del opt['train']['optim_g']
    del opt['name']
    text = '\n'.join(_problems(opt))
    assert "'datasets' has no 'train' entry" in text
    assert "missing 'train.optim_g'" in text
    assert "missing top-level key 'name'" in text


def test_missing_dataroot_folder_names_key_and_value(tmp_path):
    gt, lq = _make_data(tmp_path)
    opt = _train_opt()
    for ds in opt['datasets'].values():
        if 'dataroot_gt' in ds:
            ds['dataroot_gt'] = str(gt)
        ds['dataroot_lq'] = str(lq)
    assert _problems(opt, check_paths=True) == []
    missing = str(tmp_path / 'no_such_folder')
    opt['datasets']['train']['dataroot_gt'] = missing
    _one_problem(opt, "'datasets.train.dataroot_gt'", repr(missing), 'does not exist', check_paths=True)
    # check_paths=False skips the file system
    assert _problems(opt, check_paths=False) == []


def test_missing_meta_info_file(tmp_path):
    gt, lq = _make_data(tmp_path)
    opt = _train_opt()
    for ds in opt['datasets'].values():
        if 'dataroot_gt' in ds:
            ds['dataroot_gt'] = str(gt)
        ds['dataroot_lq'] = str(lq)
    missing = str(tmp_path / 'meta_info.txt')
    opt['datasets']['train']['meta_info_file'] = missing
    _one_problem(opt, "'datasets.train.meta_info_file'", repr(missing), check_paths=True)


def test_missing_pretrain_file_names_key_and_value(tmp_path):
    gt, lq = _make_data(tmp_path)
    opt = _train_opt()
    for ds in opt['datasets'].values():
        if 'dataroot_gt' in ds:
            ds['dataroot_gt'] = str(gt)
        ds['dataroot_lq'] = str(lq)
    missing = str(tmp_path / 'net_g_missing.pth')
    opt['path']['pretrain_network_g'] = missing
    _one_problem(opt, "'path.pretrain_network_g'", repr(missing), 'file', check_paths=True)
    (tmp_path / 'net_g_missing.pth').write_bytes(b'')
    assert _problems(opt, check_paths=True) == []


def test_multiple_problems_reported_together():
    opt = _train_opt()
    opt['manual_sed'] = 0
    opt['network_g']['type'] = 'MSRResNett'
    opt['train']['total_iter'] = 'abc'
    opt['datasets']['train']['gt_sise'] = 64
    opt['num_gpu'] = 'two'
    with pytest.raises(OptionError) as info:
        validate_options(opt, is_train=True, check_paths=False, source='my_opts.yml')
    err = info.value
    assert len(err.problems) == 5, err.problems
    msg = str(err)
    assert msg.startswith('5 problem(s) in my_opts.yml')
    for needle in ("'manual_sed'", "'network_g.type'", "'train.total_iter'", "'datasets.train.gt_sise'",
                   "'num_gpu'"):
        assert needle in msg, needle
    assert isinstance(err, ValueError)  # callers catching ValueError still see it


# ---------------------------------------------------------------------------------------------
# parse_options end to end
# ---------------------------------------------------------------------------------------------
def test_parse_train_paths_phase_and_scale(tmp_path):
    opt_file = _write_train_file(tmp_path)
    opt, args = _parse(tmp_path, opt_file)
    assert args.launcher == 'none' and opt['dist'] is False
    assert opt['is_train'] is True and opt['auto_resume'] is False
    assert opt['rank'] == 0 and opt['world_size'] == 1
    assert opt['num_gpu'] == 0 and opt['device'] == 'cpu'
    assert opt['manual_seed'] == 10
    for key, ds in opt['datasets'].items():
        assert ds['phase'] == key.split('_')[0]
        assert ds['scale'] == 2
    root = os.path.join(str(tmp_path), 'experiments', 'unit_SRResNet_x2')
    assert opt['path']['experiments_root'] == root
    assert opt['path']['models'] == os.path.join(root, 'models')
    assert opt['path']['training_states'] == os.path.join(root, 'training_states')
    assert opt['path']['visualization'] == os.path.join(root, 'visualization')
    assert opt['path']['log'] == root
    assert not os.path.exists(root)  # parsing creates nothing; make_exp_dirs does


def test_parse_test_results_paths(tmp_path):
    opt_file = _write_test_file(tmp_path)
    opt, _ = _parse(tmp_path, opt_file, is_train=False)
    assert opt['is_train'] is False
    root = os.path.join(str(tmp_path), 'results', 'unit_test_SRResNet')
    assert opt['path']['results_root'] == root
    assert opt['path']['log'] == root
    assert opt['path']['visualization'] == os.path.join(root, 'visualization')
    assert 'experiments_root' not in opt['path'] and 'models' not in opt['path']
    assert [ds['phase'] for ds in opt['datasets'].values()] == ['test', 'test']
    assert all(ds['scale'] == 2 for ds in opt['datasets'].values())


def test_parse_custom_experiments_and_results_root(tmp_path):
    custom = str(tmp_path / 'elsewhere')
    opt_file = _write_train_file(tmp_path, lambda o: o['path'].update(experiments_root=custom))
    opt, _ = _parse(tmp_path, opt_file)
    assert opt['path']['experiments_root'] == os.path.join(custom, 'unit_SRResNet_x2')
    assert opt['path']['models'] == os.path.join(custom, 'unit_SRResNet_x2', 'models')


def test_parse_custom_results_root(tmp_path):
    custom = str(tmp_path / 'my_results')
    opt_file = _write_test_file(tmp_path, lambda o: o['path'].update(results_root=custom))
    opt, _ = _parse(tmp_path, opt_file, is_train=False)
    assert opt['path']['results_root'] == os.path.join(custom, 'unit_test_SRResNet')


def test_parse_expands_user_in_dataroot_and_pretrain(tmp_path, monkeypatch):
    home = tmp_path / 'home'
    (home / 'sr' / 'gt').mkdir(parents=True)
    (home / 'sr' / 'lq').mkdir(parents=True)
    (home / 'net_g.pth').write_bytes(b'')
    monkeypatch.setenv('HOME', str(home))

    def mutate(o):
        o['datasets']['train']['dataroot_gt'] = '~/sr/gt'
        o['datasets']['train']['dataroot_lq'] = '~/sr/lq'
        o['path']['pretrain_network_g'] = '~/net_g.pth'

    opt, _ = _parse(tmp_path, _write_train_file(tmp_path, mutate))
    assert opt['datasets']['train']['dataroot_gt'] == str(home / 'sr' / 'gt')
    assert opt['datasets']['train']['dataroot_lq'] == str(home / 'sr' / 'lq')
    assert opt['path']['pretrain_network_g'] == str(home / 'net_g.pth')


def test_parse_validates_before_anything_else(tmp_path):
    missing = str(tmp_path / 'gone')

    def mutate(o):
        o['datasets']['train']['dataroot_gt'] = missing
        o['train']['optim_g']['lrr'] = 1

    with pytest.raises(OptionError) as info:
        _parse(tmp_path, _write_train_file(tmp_path, mutate))
    msg = str(info.value)
    assert "'datasets.train.dataroot_gt'" in msg and repr(missing) in msg
    assert "'train.optim_g.lrr'" in msg and "did you mean 'lr'" in msg
    assert 'train_unit.yml' in msg  # names the file
    assert not (tmp_path / 'experiments').exists()


def test_parse_missing_option_file(tmp_path):
    with pytest.raises(OptionError, match='does not exist'):
        _parse(tmp_path, str(tmp_path / 'nope.yml'))


def test_parse_bad_yaml_names_file(tmp_path):
    bad = tmp_path / 'bad.yml'
    bad.write_text('name: x\ntrain: [unclosed\n', encoding='utf-8')
    with pytest.raises(OptionError, match='cannot parse YAML') as info:
        _parse(tmp_path, str(bad))
    assert 'bad.yml' in str(info.value)


def test_parse_debug(tmp_path):
    opt, args = _parse(tmp_path, _write_train_file(tmp_path), '--debug')
    assert args.debug is True
    assert opt['name'] == 'debug_unit_SRResNet_x2'
    assert opt['val']['val_freq'] == 8
    assert opt['logger']['print_freq'] == 1
    assert opt['logger']['save_checkpoint_freq'] == 8
    assert opt['path']['experiments_root'] == os.path.join(str(tmp_path), 'experiments', 'debug_unit_SRResNet_x2')


def test_parse_without_debug_keeps_frequencies(tmp_path):
    opt, _ = _parse(tmp_path, _write_train_file(tmp_path))
    assert opt['name'] == 'unit_SRResNet_x2'
    assert opt['val']['val_freq'] == 10
    assert opt['logger']['print_freq'] == 5 and opt['logger']['save_checkpoint_freq'] == 10


def test_parse_force_yml_both_separators(tmp_path):
    opt, _ = _parse(tmp_path, _write_train_file(tmp_path), '--force_yml', 'train:total_iter=7',
                    'train.optim_g.lr=1e-4', 'manual_seed=3', 'train:scheduler:milestones=[2, 4]')
    assert opt['train']['total_iter'] == 7 and isinstance(opt['train']['total_iter'], int)
    assert opt['train']['optim_g']['lr'] == pytest.approx(1e-4) and isinstance(opt['train']['optim_g']['lr'], float)
    assert opt['manual_seed'] == 3
    assert opt['train']['scheduler']['milestones'] == [2, 4]


def test_parse_force_yml_missing_section_is_clear(tmp_path):
    with pytest.raises(OptionError) as info:
        _parse(tmp_path, _write_train_file(tmp_path), '--force_yml', 'nosuch:total_iter=7')
    msg = str(info.value)
    assert 'nosuch:total_iter=7' in msg and "'nosuch' is not a section" in msg


def test_parse_force_yml_value_is_validated(tmp_path):
    with pytest.raises(OptionError) as info:
        _parse(tmp_path, _write_train_file(tmp_path), '--force_yml', 'train:total_iter=abc')
    assert "'train.total_iter'" in str(info.value) and "'abc'" in str(info.value)


def test_force_yml_values():
    opt = {'path': {'pretrain_network_g': 'x'}, 'train': {'ema_decay': 0.9, 'flag': False}}
    apply_force_yml(opt, ['path:pretrain_network_g=~', 'train:ema_decay=none', 'train:flag=true'])
    assert opt['path']['pretrain_network_g'] is None
    assert opt['train']['ema_decay'] is None
    assert opt['train']['flag'] is True
    with pytest.raises(OptionError, match='key:sub=value'):
        apply_force_yml(opt, ['train:flag'])


def test_force_yml_value_that_is_an_existing_path_stays_a_path(tmp_path, monkeypatch):
    """The value is parsed as YAML text, never read as a file (a .pth or .yml path must stay a path)."""
    pth = tmp_path / 'net_g.pth'
    pth.write_bytes(b'PK\x03\x04\x80\x02}q\x00.')  # binary, like a torch checkpoint
    yml = tmp_path / 'other.yml'
    yml.write_text('a: 1\n', encoding='utf-8')
    opt = {'path': {'pretrain_network_g': None, 'resume_state': None}}
    apply_force_yml(opt, [f'path:pretrain_network_g={pth}', f'path.resume_state={yml}'])
    assert opt['path']['pretrain_network_g'] == str(pth)
    assert opt['path']['resume_state'] == str(yml)
    monkeypatch.chdir(tmp_path)  # relative names too
    apply_force_yml(opt, ['path:pretrain_network_g=net_g.pth'])
    assert opt['path']['pretrain_network_g'] == 'net_g.pth'


@pytest.mark.parametrize('flag', [['--local_rank', '1'], ['--local-rank=1'], ['--local-rank', '1'],
                                  ['--local_rank=1']])
def test_parse_local_rank_spellings(tmp_path, flag):
    _, args = _parse(tmp_path, _write_train_file(tmp_path), *flag)
    assert args.local_rank == 1


def test_parse_invalid_launcher_rejected(tmp_path, capsys):
    opt_file = _write_train_file(tmp_path)
    with pytest.raises(SystemExit) as info:
        parse_options(str(tmp_path), is_train=True, argv=['-opt', opt_file, '--launcher', 'mpi'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'mpi'" in err and 'pytorch' in err and 'slurm' in err


def test_parse_requires_opt(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_options(str(tmp_path), is_train=True, argv=['--launcher', 'none'])
    assert '-opt' in capsys.readouterr().err


def test_parse_auto_resume(tmp_path):
    opt, args = _parse(tmp_path, _write_train_file(tmp_path), '--auto_resume')
    assert args.auto_resume is True and opt['auto_resume'] is True


def test_parse_seed_chosen_when_absent(tmp_path):
    opt, _ = _parse(tmp_path, _write_train_file(tmp_path, lambda o: o.pop('manual_seed')))
    assert isinstance(opt['manual_seed'], int) and 1 <= opt['manual_seed'] <= 10000


def test_parse_num_gpu_auto(tmp_path):
    import torch

    opt, _ = _parse(tmp_path, _write_train_file(tmp_path, lambda o: o.update(num_gpu='auto')))
    assert opt['num_gpu'] == torch.cuda.device_count()
    if not torch.cuda.is_available():
        assert opt['num_gpu'] == 0 and opt['device'] == 'cpu'


def test_parse_num_gpu_absent_means_auto(tmp_path):
    import torch

    opt, _ = _parse(tmp_path, _write_train_file(tmp_path, lambda o: o.pop('num_gpu')))
    assert opt['num_gpu'] == torch.cuda.device_count()


def test_parse_num_gpu_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip('a GPU is visible here')
    with pytest.raises(OptionError) as info:
        _parse(tmp_path, _write_train_file(tmp_path, lambda o: o.update(num_gpu=1)))
    msg = str(info.value)
    assert 'num_gpu' in msg and 'no GPU' in msg and 'num_gpu: 0' in msg


# ---------------------------------------------------------------------------------------------
# Experiment folders and the option file copy
# ---------------------------------------------------------------------------------------------
def test_make_exp_dirs_creates_and_archives(tmp_path):
    opt, _ = _parse(tmp_path, _write_train_file(tmp_path))
    root = opt['path']['experiments_root']
    make_exp_dirs(opt)
    for key in ('models', 'training_states', 'visualization'):
        assert os.path.isdir(opt['path'][key])
    assert not os.path.exists(os.path.join(root, 'None'))
    with open(os.path.join(root, 'models', 'net_g_10.pth'), 'w') as f:
        f.write('old run')

    make_exp_dirs(opt)  # a second start archives the first run
    archived = glob.glob(root + '_archived_*')
    assert len(archived) == 1, archived
    assert re.fullmatch(re.escape(root) + r'_archived_\d{8}_\d{6}', archived[0])
    with open(os.path.join(archived[0], 'models', 'net_g_10.pth')) as f:
        assert f.read() == 'old run'
    assert os.path.isdir(opt['path']['models']) and os.listdir(opt['path']['models']) == []


def test_make_exp_dirs_for_test_results(tmp_path):
    opt, _ = _parse(tmp_path, _write_test_file(tmp_path), is_train=False)
    make_exp_dirs(opt)
    assert os.path.isdir(opt['path']['results_root'])
    assert os.path.isdir(opt['path']['visualization'])
    assert not os.path.exists(os.path.join(str(tmp_path), 'experiments'))


def test_copy_opt_file_header(tmp_path, monkeypatch):
    opt_file = _write_train_file(tmp_path)
    original = open(opt_file, encoding='utf-8').read()
    argv = ['realsr/train.py', '-opt', opt_file, '--debug']
    monkeypatch.setattr(sys, 'argv', argv)
    dest = tmp_path / 'exp'
    copy_opt_file(opt_file, str(dest))
    copied = (dest / os.path.basename(opt_file)).read_text(encoding='utf-8')
    lines = copied.split('\n')
    assert lines[0].startswith('# GENERATE TIME: ') and len(lines[0]) > len('# GENERATE TIME: ')
    assert lines[1] == '# CMD:'
    assert lines[2] == '# ' + ' '.join(argv)
    assert copied.endswith(original)
    assert yaml_load(copied) == yaml_load(original)  # the header is comments only
    assert open(opt_file, encoding='utf-8').read() == original  # source untouched
