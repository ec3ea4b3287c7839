"""Bad values and misspellings the issue lists, each rejected at validation time with its key
path named; keys that the code reads are accepted. Also: validating imports no OpenCV."""
import copy
import os
import subprocess
import sys

import pytest

from realsr.option_schema import OptionError, validate_options
from realsr.options import _datasets
from realsr.utils.yaml_util import yaml_load

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR_FILE = os.path.join(REPO_ROOT, 'options', 'train', 'train_MSRResNet_x4.yml')  # SRModel, paired data, x4
ON_THE_FLY_FILE = os.path.join(REPO_ROOT, 'options', 'train', 'realesrnet_quickstart.yml')  # RealESRNetModel
DASR_FILE = os.path.join(REPO_ROOT, 'options', 'train', 'train_CDDNet_x4.yml')


def _load(path):
    opt = yaml_load(path)
    _datasets(opt)
    return opt


def _problems(opt, is_train=True):
    try:
        validate_options(opt, is_train=is_train, check_paths=False)
    except OptionError as err:
        return err.problems
    return []


def _set(opt, dotted, value):
    *parents, last = dotted.split('.')
    node = opt
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return opt


_DELETE = object()


@pytest.mark.parametrize('path, key, value, needle', [
    (SR_FILE, 'train.optim_g.lr', '2e-4x', "'train.optim_g.lr' must be a number, got '2e-4x'"),
    (SR_FILE, 'val.val_freq', 0, "'val.val_freq' must be at least 1, got 0"),
    (SR_FILE, 'train.total_iter', 0, "'train.total_iter' must be at least 1, got 0"),
    (SR_FILE, 'train.total_iter', -5, "'train.total_iter' must be at least 1, got -5"),
    (SR_FILE, 'logger.print_freq', 0, "'logger.print_freq' must be at least 1"),
    (SR_FILE, 'logger.save_checkpoint_freq', -1, "'logger.save_checkpoint_freq' must be at least 1"),
    (SR_FILE, 'datasets.train.gt_size', 30, "'datasets.train.gt_size' (30) must be a multiple of scale (4)"),
    (ON_THE_FLY_FILE, 'gt_size', 30, "'gt_size' (30) must be a multiple of scale (4)"),
    (ON_THE_FLY_FILE, 'datasets.train.crop_pad_size', 48, "'datasets.train.crop_pad_size' (48) is too small"),
    (DASR_FILE, 'num_networks', 3, "'num_networks' (3) and 'network_g.num_models' (5) differ"),
    (ON_THE_FLY_FILE, 'gt_size', 1024, "'gt_size' (1024) is larger than 'datasets.train.crop_pad_size'"),
    (SR_FILE, 'val.metrics.psnr.crop_border', _DELETE,
     "'val.metrics.psnr' is missing the required key 'crop_border' of calculate_psnr"),
    (SR_FILE, 'val.metrics.psnr', {'type': 'calculate_ssim'},
     "'val.metrics.psnr' is missing the required key 'crop_border' of calculate_ssim"),
    (SR_FILE, 'val.metrics.psnr', {'type': 'calculate_niqe'},
     "'val.metrics.psnr' is missing the required key 'crop_border' of calculate_niqe"),
    (SR_FILE, 'val.val_freq', _DELETE, "missing 'val.val_freq'"),
    (SR_FILE, 'val.pad_mode', 'mirror', "'val.pad_mode' must be one of reflect, flip, got 'mirror'"),
    (SR_FILE, 'train.warmup_iter', -2, "'train.warmup_iter' must be at least -1"),
    (SR_FILE, 'network_g.num_feat', 'sixty-four', "'network_g.num_feat' must be a number"),
    (SR_FILE, 'datasets.train.use_hflip', 'yes', "'datasets.train.use_hflip' must be true or false"),
])
def test_bad_values_are_rejected_naming_the_key(path, key, value, needle):
    opt = _set(_load(path), key, value)
    problems = _problems(opt)
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize('path, mutate, needle', [
    (SR_FILE, lambda o: o.update(netwrok_g=o.pop('network_g')), "unknown key 'netwrok_g'; did you mean 'network_g'?"),
    (SR_FILE, lambda o: o['datasets']['train'].update(tyep=o['datasets']['train'].pop('type')),
     "unknown key 'datasets.train.tyep'; did you mean 'type'?"),
    (SR_FILE, lambda o: o['train'].update(pixle_opt=o['train'].pop('pixel_opt')),
     "unknown key 'train.pixle_opt': did you mean 'pixel_opt'?"),
    (SR_FILE, lambda o: o['train'].update(gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla'}),
     "unknown key 'train.gan_opt'"),  # SRModel has no discriminator: the loss would be ignored
    (SR_FILE, lambda o: o['datasets']['train'].update(use_flip=True),
     "unknown key 'datasets.train.use_flip'; did you mean 'use_hflip'?"),
    (SR_FILE, lambda o: o['path'].update(root='/tmp'), "unknown key 'path.root'"),
    (SR_FILE, lambda o: o['path'].update(pretrain_network_g_path='x.pth'),
     "unknown key 'path.pretrain_network_g_path'"),
    (SR_FILE, lambda o: o['path'].update(pretrain_network_d='x.pth'), "unknown key 'path.pretrain_network_d'"),
    (SR_FILE, lambda o: o.update(network_d={'type': 'VGGStyleDiscriminator', 'num_in_ch': 3}),
     "unknown key 'network_d': SRModel builds network_g"),
    (SR_FILE, lambda o: o['datasets'].update(evaluation=o['datasets'].pop('val')),
     "unknown key 'datasets.evaluation': dataset keys must start with train, val or test"),
    (SR_FILE, lambda o: o.update(network_g={'type': 'SwinIR', 'upscale': 4, 'windw_size': 8}),
     "unknown key 'network_g.windw_size'; did you mean 'window_size'?"),
    (SR_FILE, lambda o: o.update(network_g={'type': 'DRCT', 'upscale': 4, 'squeze_factor': 30}),
     "unknown key 'network_g.squeze_factor'; did you mean 'squeeze_factor'?"),
    (DASR_FILE, lambda o: o.update(resize_prob_weak2=[0.1, 0.2, 0.7]), "unknown key 'resize_prob_weak2'"),
    (DASR_FILE, lambda o: o.update(resize_prob_severe1=[0.1, 0.2, 0.7]), "unknown key 'resize_prob_severe1'"),
    (DASR_FILE, lambda o: o['datasets']['train'].update(blur_sigma_weka1=[0.2, 0.8]),
     "unknown key 'datasets.train.blur_sigma_weka1'; did you mean 'blur_sigma_weak1'?"),
    (DASR_FILE, lambda o: o['datasets']['train'].update(dataroot_gtt='x'), "unknown key 'datasets.train.dataroot_gtt'"),
    (ON_THE_FLY_FILE, lambda o: o['logger'].setdefault('wandb', {}).update(projcet='x'),
     "unknown key 'logger.wandb.projcet'; did you mean 'project'?"),
])
def test_misspellings_are_rejected_with_a_suggestion(path, mutate, needle):
    opt = _load(path)
    mutate(opt)
    problems = _problems(opt)
    assert any(needle in p for p in problems), problems


def test_keys_the_code_reads_are_accepted():
    opt = _load(ON_THE_FLY_FILE)
    opt['datasets']['train'].update(kernel_range=[7, 21], kernel_range2=[7, 15], final_kernel_range=[7, 21],
                                    prefetch_factor=4, use_shuffle=True)
    assert _problems(opt) == []
    dasr = _load(DASR_FILE)
    assert any(k.endswith('_weak1') for k in dasr) and any(k.endswith('_standard1') for k in dasr['datasets']['train'])
    assert dasr['datasets']['train']['type'] == 'DASRDataset'
    assert _problems(dasr) == []


def test_a_key_the_dataset_does_not_read_is_rejected_where_it_is_not_read():
    """Kernel keys belong to on-the-fly training data (a paired dataset reads none); DASR's space
    keys to DASRDataset; augmentation, crop and loader keys to a training dataset."""
    paired = _load(SR_FILE)
    paired['datasets']['train']['kernel_range'] = [7, 21]
    assert any("unknown key 'datasets.train.kernel_range'" in p for p in _problems(paired))
    realesrgan = _load(ON_THE_FLY_FILE)
    realesrgan['datasets']['train']['blur_sigma_weak1'] = [0.2, 0.8]
    assert any("unknown key 'datasets.train.blur_sigma_weak1'" in p for p in _problems(realesrgan))
    for key, value in (('use_hflip', True), ('gt_size', 128), ('num_worker_per_gpu', 4), ('batch_size_per_gpu', 2)):
        opt = _load(SR_FILE)
        opt['datasets']['val'][key] = value
        assert _problems(opt) == [f"'datasets.val.{key}' applies to training datasets only (val datasets load each "
                                  'image once, whole, without augmentation or batching); remove it'], key


def test_a_key_rejected_in_one_model_is_read_by_another():
    """Loss slots and networks follow the model: gan_opt and network_d belong to a GAN model."""
    opt = _load(SR_FILE)
    opt['train']['gan_opt'] = {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1}
    opt['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3}
    opt['train']['optim_d'] = copy.deepcopy(opt['train']['optim_g'])
    assert _problems(opt)
    opt['model_type'] = 'RealESRGANModel'
    assert _problems(opt) == []


def test_validation_is_pure_and_fast():
    import time
    opt = _load(DASR_FILE)
    before = copy.deepcopy(opt)
    validate_options(opt, is_train=True, check_paths=False)  # first call: registries, signatures
    start = time.perf_counter()
    for _ in range(20):
        validate_options(opt, is_train=True, check_paths=False)
    per_file = (time.perf_counter() - start) / 20
    assert opt == before  # nothing written into the options
    assert per_file < 0.05, per_file  # ~1 ms here; the typo tests validate thousands of variants


def test_validating_a_file_imports_no_opencv():
    """Parsing options must not load OpenCV or the image modules (they are slow to import and
    optional on a login node); archs may import torch for their signatures."""
    code = (
        'import sys, glob\n'
        'from realsr.options import _datasets, load_option_file\n'
        'from realsr.option_schema import validate_options\n'
        f'for f in sorted(glob.glob({os.path.join(REPO_ROOT, "options", "*", "*.yml")!r})):\n'
        '    opt = load_option_file(f); _datasets(opt)\n'
        "    validate_options(opt, is_train='/train/' in f, check_paths=False)\n"
        "heavy = [m for m in ('cv2', 'scipy', 'PIL', 'realsr.utils.img_util', 'realsr.metrics.psnr_ssim') "
        'if m in sys.modules]\n'
        'print(heavy)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]', out.stdout


def _point_paths_at(opt, tmp_path):
    """Data folders, meta-info files and pretrained weights of a file pointed at temporary ones."""
    folder, file = tmp_path / 'data', tmp_path / 'file.txt'
    folder.mkdir(exist_ok=True)
    file.write_text('x\n')
    for ds in (opt.get('datasets') or {}).values():
        for key in ('dataroot_gt', 'dataroot_lq'):
            if ds.get(key) is not None:
                ds[key] = str(folder)
        for key in ('meta_info', 'meta_info_file'):
            if ds.get(key) is not None:
                ds[key] = str(file)
    grids = opt.get('datasets_grid') or []
    for grid in [grids] if isinstance(grids, dict) else grids:
        grid.update({k: str(folder) for k in ('dataroot_gt', 'dataroot_lq') if grid.get(k) is not None})
    for key, value in (opt.get('path') or {}).items():
        if key.startswith('pretrain_network_') and value is not None:
            opt['path'][key] = str(file)
        if key == 'resume_state' and value is not None:
            opt['path'][key] = str(file)
    return opt


def test_every_shipped_and_seed_file_passes_with_its_paths(tmp_path, seed_options_dir):
    import glob
    files = sorted(glob.glob(os.path.join(REPO_ROOT, 'options', '*', '*.yml')) +
                   glob.glob(str(seed_options_dir / '*' / '*.yml')))
    for path in files:
        opt = _point_paths_at(_load(path), tmp_path)
        is_train = os.sep + 'train' + os.sep in path or os.path.basename(path).startswith('train')
        validate_options(opt, is_train=is_train, check_paths=True, source=path)
        missing = copy.deepcopy(opt)
        ds = next((d for d in (missing.get('datasets') or {}).values() if d.get('dataroot_gt') or d.get('dataroot_lq')),
                  None)
        if ds is None:
            continue  # a datasets_grid file: its folders come from the grid
        key = 'dataroot_gt' if ds.get('dataroot_gt') else 'dataroot_lq'
        ds[key] = str(tmp_path / 'absent')
        with pytest.raises(OptionError, match='does not exist'):
            validate_options(missing, is_train=is_train, check_paths=True)
