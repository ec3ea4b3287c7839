"""The second-order pipeline, the training-pair pool, the GT-only dataset and the Real-ESRNet /
Real-ESRGAN models, including the Real-ESRGAN option files run on the CPU with tiny networks."""
import os
import signal

import numpy as np
import pytest
import torch
import yaml

from conftest import fake_vgg19_weights, write_pair_folders
from realsr.degradations.pair_pool import TrainingPairPool
from realsr.degradations.pipeline import (DEFAULTS, OFFICIAL_KERNEL_OPT, SecondOrderDegradation,
                                          paired_random_crop_batch)

KERNEL_OPT = OFFICIAL_KERNEL_OPT  # train_realesrnet_x4plus.yml, datasets.train


def smooth_batch(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, max(h // 8, 2), max(w // 8, 2), generator=g)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode='bilinear', align_corners=False)
    return (img + 0.03 * torch.randn(b, 3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize('gray', [0.0, 1.0])
@pytest.mark.parametrize('scale,size', [(4, (76, 76)), (2, (80, 76)), (4, (92, 80))])
def test_pipeline_shapes_ranges_and_quantisation(scale, size, gray):
    deg = SecondOrderDegradation({'gray_noise_prob': gray, 'gray_noise_prob2': gray}, KERNEL_OPT, scale)
    gt = smooth_batch(3, *size)
    seen = {'order_a': set(), 'gaussian1': set(), 'gaussian2': set(), 'second_blur': set(), 'mode1': set()}
    for seed in range(16):
        g = torch.Generator().manual_seed(seed)
        lq = deg(gt, g)
        assert lq.shape == (3, 3, size[0] // scale, size[1] // scale)
        assert lq.min() >= 0 and lq.max() <= 1
        assert torch.equal(lq * 255, (lq * 255).round())  # quantised to 8 bits
        for key in seen:
            seen[key].add(deg.last_params[key])
    # every path was taken: both final orders, both noise types at both stages, with and
    # without the second blur, all three resize modes
    assert all(len(v) == 2 for k, v in seen.items() if k != 'mode1') and len(seen['mode1']) == 3, seen
    assert torch.equal(gt, smooth_batch(3, *size))  # the input is not modified


def test_pipeline_is_deterministic_per_seed():
    deg = SecondOrderDegradation({}, KERNEL_OPT, 4)
    gt = smooth_batch(2, 76, 76)
    a = deg(gt, torch.Generator().manual_seed(7))
    b = deg(gt, torch.Generator().manual_seed(7))
    c = deg(gt, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


MILD = {'resize_prob': [0, 0, 1], 'resize_prob2': [0, 0, 1], 'noise_range': [0, 0.001], 'noise_range2': [0, 0.001],
        'gaussian_noise_prob': 1, 'gaussian_noise_prob2': 1, 'jpeg_range': [95, 95.01], 'jpeg_range2': [95, 95.01],
        'second_blur_prob': 0}
MILD_KERNELS = dict(KERNEL_OPT, blur_sigma=[0.2, 0.21], sinc_prob=0, final_sinc_prob=0, kernel_list=['iso'],
                    kernel_prob=[1])


@pytest.mark.parametrize('change', ['blur', 'noise', 'resize'])
def test_each_option_group_reaches_its_op(change):
    """From nearly degradation-free settings, turning up one group of options (blur sigma, noise
    level, down-resizing) changes the LQ made with the same seed clearly."""
    gt = smooth_batch(4, 76, 76)
    opt, kopt = dict(MILD), dict(MILD_KERNELS)
    if change == 'blur':
        kopt['blur_sigma'] = [2.8, 3.0]
    elif change == 'noise':
        opt.update(noise_range=[25, 30], noise_range2=[25, 30])
    else:
        opt.update(resize_prob=[0, 1, 0], resize_range=[0.25, 0.3])
    mild, changed = SecondOrderDegradation(MILD, MILD_KERNELS, 4), SecondOrderDegradation(opt, kopt, 4)
    diffs = [(changed(gt, torch.Generator().manual_seed(s)) - mild(gt, torch.Generator().manual_seed(s))).abs().mean()
             for s in range(4)]
    assert min(diffs) > 0.01, diffs


def test_resize_direction_frequencies_match_resize_prob():
    probs = DEFAULTS['resize_prob']
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0)).tolist()
    counts = np.bincount([SecondOrderDegradation._pick(x, probs) for x in u], minlength=3) / len(u)
    assert np.allclose(counts, probs, atol=0.015)
    modes = [SecondOrderDegradation._mode(x) for x in u]
    assert {m: modes.count(m) / len(u) for m in set(modes)} == pytest.approx(
        {'area': 1 / 3, 'bilinear': 1 / 3, 'bicubic': 1 / 3}, abs=0.015)


def test_too_small_gt_gets_a_clear_error():
    deg = SecondOrderDegradation({}, KERNEL_OPT, 4)
    with pytest.raises(ValueError, match='Use crop_pad_size .* of at least 74 px'):
        deg(smooth_batch(1, 64, 64), torch.Generator().manual_seed(0))


def test_bad_probability_list_and_range_are_named():
    with pytest.raises(ValueError, match="'resize_prob'"):
        SecondOrderDegradation({'resize_prob': [0.5, 0.6, 0.1]}, KERNEL_OPT, 4)
    with pytest.raises(ValueError, match="'jpeg_range2'"):
        SecondOrderDegradation({'jpeg_range2': [95, 30]}, KERNEL_OPT, 4)


def test_paired_crop_errors_and_alignment():
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(2, 3, 16, 16)
    gt = torch.nn.functional.interpolate(lq, scale_factor=4, mode='nearest')
    (gt_c, ), lq_c = paired_random_crop_batch([gt], lq, 32, 4, g)
    assert torch.equal(torch.nn.functional.interpolate(lq_c, scale_factor=4, mode='nearest'), gt_c)
    with pytest.raises(ValueError, match='smaller than the patch size'):
        paired_random_crop_batch([gt], lq, 128, 4, g)


# -- the pool --------------------------------------------------------------------------------
def test_pool_fills_then_mixes_and_keeps_pairs_aligned():
    pool = TrainingPairPool(queue_size=7, batch_size=2)  # rounded down to 6
    assert pool.size == 6
    g = torch.Generator().manual_seed(0)
    seen = []
    for step in range(10):
        ids = torch.arange(step * 2, step * 2 + 2, dtype=torch.float32)
        batch = {'lq': ids.view(2, 1, 1, 1).expand(2, 3, 2, 2).clone(), 'gt': (ids * 10).view(2, 1).clone()}
        out = pool(batch, g)
        assert torch.equal(out['gt'].view(-1), out['lq'][:, 0, 0, 0] * 10)  # lq and gt stay paired
        if step < 3:
            assert torch.equal(out['lq'], batch['lq'])  # while filling, the batch is used as it is
        seen += out['lq'][:, 0, 0, 0].tolist()
    assert max(seen) < 20 and len(set(seen)) > 6  # later outputs come from earlier batches too


def test_pool_state_roundtrip_continues_identically():
    def run(pool, g, steps, start):
        outs = []
        for step in range(start, start + steps):
            outs.append(pool({'x': torch.full((2, 1), float(step))}, g)['x'].clone())
        return outs

    pool, g = TrainingPairPool(6, 2), torch.Generator().manual_seed(3)
    run(pool, g, 5, 0)
    state, gstate = pool.state_dict(), g.get_state()
    expected = run(pool, g, 4, 5)
    fresh, g2 = TrainingPairPool(6, 2), torch.Generator()
    fresh.load_state_dict(state)
    g2.set_state(gstate)
    assert all(torch.equal(a, b) for a, b in zip(run(fresh, g2, 4, 5), expected))


# -- the dataset -----------------------------------------------------------------------------
def test_realesrgan_dataset_crops_and_pads(tmp_path):
    from realsr.data.realesrgan_dataset import RealESRGANDataset
    folders = write_pair_folders(tmp_path, n_train=3, n_val=1, hr_size=48)
    opt = {'name': 't', 'type': 'RealESRGANDataset', 'dataroot_gt': folders['train_gt'], 'io_backend': {'type': 'disk'},
           'use_hflip': True, 'use_rot': False, 'crop_pad_size': 40, 'phase': 'train'}
    item = RealESRGANDataset(opt)[0]
    assert item['gt'].shape == (3, 40, 40) and item['gt_path'].endswith('img00.png')
    padded = RealESRGANDataset(dict(opt, crop_pad_size=64))[1]['gt']
    assert padded.shape == (3, 64, 64)
    assert torch.equal(padded[:, 48:50, :48], padded[:, [46, 45], :48])  # reflect-101 padding at the bottom
    (tmp_path / 'meta.txt').write_text('img02.png (48,48,3)\nimg00.png (48,48,3)\n')
    listed = RealESRGANDataset(dict(opt, dataroot_gt=os.path.dirname(folders['train_gt']) + '/HR',
                                    meta_info=str(tmp_path / 'meta.txt')))
    assert len(listed) == 2 and listed.paths[0].endswith('img02.png')


# -- models and the Real-ESRGAN option files ----------------------------------------------------
def seed_file_for_cpu(seed_options_dir, name, folders, exp_name, total_iter=4):
    opt = yaml.safe_load((seed_options_dir / 'real_esrgan' / name).read_text())
    opt['name'] = exp_name
    opt['num_gpu'] = 0
    opt.setdefault('dist_params', {})['backend'] = 'gloo'  # the seed files say nccl, which needs CUDA
    opt['datasets']['train'].update(dataroot_gt=folders['train_gt'], meta_info=None, num_worker_per_gpu=0,
                                    batch_size_per_gpu=2, crop_pad_size=80)
    opt['gt_size'] = 32
    opt['queue_size'] = 4
    opt['network_g'].update(num_feat=4, num_block=1, num_grow_ch=4)
    if 'network_d' in opt:
        opt['network_d']['num_feat'] = 4
    opt['path']['pretrain_network_g'] = None
    opt['train']['total_iter'] = total_iter
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    return opt


@pytest.mark.slow
@pytest.mark.parametrize('name', ['train_realesrnet_x4plus.yml', 'train_realesrgan_x4plus.yml'])
def test_real_esrgan_option_files_run_on_cpu(name, tmp_path, seed_options_dir, monkeypatch):
    from realsr import train
    folders = write_pair_folders(tmp_path / 'data', n_train=4, n_val=1, hr_size=48)
    opt = seed_file_for_cpu(seed_options_dir, name, folders, 'esr')
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.setenv('REALSR_VGG_WEIGHTS', fake_vgg19_weights(tmp_path / 'vgg19.pth'))
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', str(tmp_path / 'o.yml')])
    models = tmp_path / 'experiments' / 'esr' / 'models'
    assert (models / 'net_g_4.pth').is_file()
    assert model.lq.shape == (2, 3, 8, 8) and model.gt.shape == (2, 3, 32, 32)
    if 'gan' in name:
        assert (models / 'net_d_4.pth').is_file()
        assert {'l_g_pix', 'l_g_percep', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(model.log_dict)


@pytest.mark.slow
def test_realesrnet_resume_is_exact_with_pipeline_and_pool(tmp_path, seed_options_dir):
    """The degradation generator and the pool are in the training state: kill and resume give
    the same weights as an uninterrupted run."""
    import subprocess
    import sys

    from conftest import REPO_ROOT
    folders = write_pair_folders(tmp_path / 'data', n_train=5, n_val=1, hr_size=48)

    def run(exp, *extra, env=None):
        opt = seed_file_for_cpu(seed_options_dir, 'train_realesrnet_x4plus.yml', folders, exp, total_iter=8)
        path = tmp_path / f'{exp}.yml'
        path.write_text(yaml.safe_dump(opt))
        return subprocess.run([sys.executable, str(REPO_ROOT / 'realsr' / 'train.py'), '-opt', str(path), *extra],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, OMP_NUM_THREADS='1', **(env or {})))

    assert run('full').returncode == 0
    assert run('cut', env={'REALSR_TEST_KILL_AFTER_ITER': '4'}).returncode == -signal.SIGKILL
    state = torch.load(tmp_path / 'experiments' / 'cut' / 'training_states' / '4.state', weights_only=True)
    assert state['pair_pool']['ptr'] == 4 and 'degradation_generator' in state
    resumed = run('cut', '--auto_resume')
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / 'experiments' / 'full' / 'models' / 'net_g_8.pth', weights_only=True)
    b = torch.load(tmp_path / 'experiments' / 'cut' / 'models' / 'net_g_8.pth', weights_only=True)
    for key in ('params', 'params_ema'):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f'{key}/{name}'


def test_gt_size_larger_than_crop_pad_size_is_named(tmp_path, seed_options_dir, monkeypatch, capsys):
    """Found by the option checker, before any folder is written (exit status 2)."""
    from realsr import train
    folders = write_pair_folders(tmp_path / 'data', n_train=4, n_val=1, hr_size=48)
    opt = seed_file_for_cpu(seed_options_dir, 'train_realesrnet_x4plus.yml', folders, 'big')
    opt['gt_size'] = 96
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train.main(['-opt', str(tmp_path / 'o.yml')])
    assert exit_info.value.code == 2
    assert "'gt_size' (96) is larger than 'datasets.train.crop_pad_size' (80)" in capsys.readouterr().err
    assert not (tmp_path / 'experiments').exists()


def test_show_degradations_writes_the_grid(tmp_path, seed_options_dir):
    import cv2

    from conftest import REPO_ROOT
    import subprocess
    import sys
    folders = write_pair_folders(tmp_path / 'data', n_train=3, n_val=1, hr_size=48)
    out = tmp_path / 'grid.png'
    proc = subprocess.run([sys.executable, str(REPO_ROOT / 'scripts' / 'show_degradations.py'), '-opt',
                           str(seed_options_dir / 'real_esrgan' / 'train_realesrnet_x4plus.yml'), '--num', '2',
                           '--variants', '2', '--out', str(out), '--force_yml',
                           f"datasets:train:dataroot_gt={folders['train_gt']}", 'datasets:train:meta_info=~',
                           'datasets:train:crop_pad_size=96'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grid = cv2.imread(str(out))
    assert grid.shape == (2 * 96, 3 * 96, 3)  # rows: GT images; columns: GT + 2 degraded versions


def test_paired_finetuning_without_high_order_degradation(tmp_path, seed_options_dir, monkeypatch):
    """Real-ESRGAN's pair-data fine-tuning: high_order_degradation false, RealESRGANPairedDataset
    with a 'gt, lq' meta_info file."""
    from realsr import train
    folders = write_pair_folders(tmp_path / 'data', n_train=4, n_val=1, hr_size=48)
    names = sorted(os.listdir(folders['train_gt']))
    meta = tmp_path / 'pairs.txt'
    meta.write_text(''.join(f'{n}, {n}\n' for n in names[:3]))
    opt = seed_file_for_cpu(seed_options_dir, 'train_realesrgan_x4plus.yml', folders, 'paired')
    opt['high_order_degradation'] = False
    opt['datasets']['train'] = {
        'name': 'pairs', 'type': 'RealESRGANPairedDataset', 'dataroot_gt': folders['train_gt'],
        'dataroot_lq': folders['train_lq'], 'meta_info': str(meta), 'io_backend': {'type': 'disk'}, 'gt_size': 32,
        'use_hflip': True, 'use_rot': False, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2}
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.setenv('REALSR_VGG_WEIGHTS', fake_vgg19_weights(tmp_path / 'vgg19.pth'))
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', str(tmp_path / 'o.yml')])
    assert model.degradation is None  # no synthesis: the pairs are used as they are
    assert model.lq.shape == (2, 3, 8, 8) and (tmp_path / 'experiments' / 'paired' / 'models' / 'net_d_4.pth').is_file()
    ds = model.opt['datasets']['train']
    from realsr.data import build_dataset
    assert len(build_dataset(ds)) == 3  # the meta_info file, not the folder scan, lists the pairs


@pytest.mark.slow
def test_realesrnet_ddp_two_processes_gloo(tmp_path, seed_options_dir):
    """Each rank synthesises its own pairs (its own generator and pool); gradients are averaged,
    so both ranks end with the same weights."""
    import subprocess
    import sys

    from conftest import REPO_ROOT
    folders = write_pair_folders(tmp_path / 'data', n_train=4, n_val=1, hr_size=48)
    opt = seed_file_for_cpu(seed_options_dir, 'train_realesrnet_x4plus.yml', folders, 'ddp_esr', total_iter=3)
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    dump = tmp_path / 'dump.py'
    dump.write_text(
        'import os, sys, torch\n'
        f'sys.path.insert(0, {str(REPO_ROOT)!r})\n'
        'from realsr.engine.trainer import train_pipeline\n'
        'from realsr.runtime.checkpoint import unwrap\n'
        'model = train_pipeline(os.getcwd(), sys.argv[1:])\n'
        'r = torch.distributed.get_rank()\n'
        'torch.save({"w": unwrap(model.net_g).state_dict(), "lq": model.lq}, f"rank{r}.pth")\n')
    port = 30500 + os.getpid() % 1000
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}',
                           str(dump), '-opt', str(tmp_path / 'o.yml'), '--launcher', 'pytorch'], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in (0, 1))
    assert all(torch.equal(r0['w'][k], r1['w'][k]) for k in r0['w'])
    assert not torch.equal(r0['lq'], r1['lq'])  # the ranks degrade differently


def test_realesrgan_dataset_reads_lmdb(tmp_path):
    from realsr.data.lmdb_util import make_lmdb_from_folder
    from realsr.data.realesrgan_dataset import RealESRGANDataset
    folders = write_pair_folders(tmp_path, n_train=3, n_val=1, hr_size=48)
    lmdb_path = str(tmp_path / 'gt.lmdb')
    make_lmdb_from_folder(folders['train_gt'], lmdb_path)
    base = {'name': 't', 'type': 'RealESRGANDataset', 'use_hflip': False, 'use_rot': False, 'crop_pad_size': 48,
            'phase': 'train'}
    from_lmdb = RealESRGANDataset(dict(base, dataroot_gt=lmdb_path, io_backend={'type': 'lmdb'}))
    from_disk = RealESRGANDataset(dict(base, dataroot_gt=folders['train_gt'], io_backend={'type': 'disk'}))
    assert len(from_lmdb) == 3
    assert torch.equal(from_lmdb[1]['gt'], from_disk[1]['gt'])
    with pytest.raises(ValueError, match="must end with '.lmdb'"):
        RealESRGANDataset(dict(base, dataroot_gt=folders['train_gt'], io_backend={'type': 'lmdb'}))
