"""DASR's degradation spaces and 33-value parameter vector (realsr.degradations.dasr_spaces)."""
import math
import os

import pytest
import torch
import yaml
from torch.nn import functional as F

from conftest import SHARED_DIR
from realsr.degradations.dasr_spaces import (DEGRADATION_SPACES, NUM_DEGRADATION_PARAMS, DASRDegradation,
                                             dasr_kernel_sizes)
from realsr.degradations.filters import filter2D
from realsr.degradations.jpeg import DiffJPEG
from realsr.degradations.kernel_synthesis import SINC
from realsr.degradations.noise import random_add_gaussian_noise_pt, random_add_poisson_noise_pt
from realsr.degradations.pair_pool import TrainingPairPool

SEED_FILE = str(SHARED_DIR / 'reference' / 'seed_options' / 'cddnet' / 'train_DASR.yml')

# DASR's train_DASR.yml values, written out here so the test does not read them from the code under test
TOP = {
    'degree_list': list(DEGRADATION_SPACES), 'degree_prob': [0.3, 0.3, 0.4],
    'resize_prob_weak1': [0.1, 0.2, 0.7], 'resize_range_weak1': [0.85, 1.2], 'gaussian_noise_prob_weak1': 0.5,
    'noise_range_weak1': [1, 10], 'poisson_scale_range_weak1': [0.05, 0.5], 'gray_noise_prob_weak1': 0.4,
    'jpeg_range_weak1': [90, 95],
    'resize_prob_standard1': [0.3, 0.4, 0.3], 'resize_range_standard1': [0.5, 1.2],
    'gaussian_noise_prob_standard1': 0.5, 'noise_range_standard1': [1, 20],
    'poisson_scale_range_standard1': [0.05, 1.5], 'gray_noise_prob_standard1': 0.4,
    'jpeg_range_standard1': [50, 95],
    'resize_prob': [0.2, 0.7, 0.1], 'resize_range': [0.15, 1.5], 'gaussian_noise_prob': 0.5, 'noise_range': [1, 30],
    'poisson_scale_range': [0.05, 3], 'gray_noise_prob': 0.4, 'jpeg_range': [30, 95],
    'second_blur_prob': 0.8, 'resize_prob2': [0.3, 0.4, 0.3], 'resize_range2': [0.3, 1.2],
    'gaussian_noise_prob2': 0.5, 'noise_range2': [1, 25], 'poisson_scale_range2': [0.05, 2.5],
    'gray_noise_prob2': 0.4, 'jpeg_range2': [30, 95],
}
TRAIN = {}
for _suffix, _sigma in (('_weak1', [0.2, 0.8]), ('_standard1', [0.2, 1.5]), ('', [0.2, 3]), ('2', [0.2, 1.5])):
    TRAIN.update({f'kernel_list{_suffix}': ['iso', 'aniso'], f'kernel_prob{_suffix}': [0.65, 0.35],
                  f'sinc_prob{_suffix}': 0, f'blur_sigma{_suffix}': _sigma, f'betag_range{_suffix}': [0.5, 4],
                  f'betap_range{_suffix}': [1, 2]})
TRAIN.update(blur_kernel_size_weak1=21, blur_kernel_size_minimum_weak1=7, blur_kernel_size_standard1=21,
             blur_kernel_size_minimum_standard1=7, blur_kernel_size=21, blur_kernel_size_minimum=7,
             blur_kernel_size2=21, blur_kernel_size2_minimum=7, final_sinc_prob=0.8)
GT_SIZE = 96  # the smallest multiple of 4 the severe space's 21x21 kernels and 0.15 shrink allow
MODES = ('area', 'bilinear', 'bicubic')


def _deg(top=None, train=None):
    return DASRDegradation(dict(TOP, **(top or {})), dict(TRAIN, **(train or {})), 4)


def _gt(b=4, seed=0):
    return torch.rand(b, 3, GT_SIZE, GT_SIZE, generator=torch.Generator().manual_seed(seed))


def test_space_frequencies_follow_degree_prob():
    deg = _deg()
    g = torch.Generator().manual_seed(1)
    n = 6000
    counts = {name: 0 for name in DEGRADATION_SPACES}
    for _ in range(n):
        counts[deg.choose_space(g)] += 1
    for name, p in zip(DEGRADATION_SPACES, [0.3, 0.3, 0.4]):
        assert abs(counts[name] / n - p) < 4 * math.sqrt(p * (1 - p) / n), counts


def test_kernel_sizes_follow_dasr_list():
    assert dasr_kernel_sizes(7, 21) == [9, 21]  # 2v+1 for v in range(4, 11)
    assert dasr_kernel_sizes(8, 20) == [9, 19]
    deg = _deg()
    g = torch.Generator().manual_seed(2)
    sizes = set()
    for name in DEGRADATION_SPACES:
        params = deg.spaces[name].kernels.sample_params(400, g)
        sizes |= set(params['kernel1']['size'].tolist())
    assert sizes == set(range(9, 22, 2))


def _check_vector(vec, name, second_blur=None):
    assert vec.shape[1] == NUM_DEGRADATION_PARAMS and vec.dtype == torch.float32
    assert torch.isfinite(vec).all()
    pulse_or_unit = (vec[:, 8:10] == -0.5) | ((vec[:, 8:10] >= 0) & (vec[:, 8:10] <= 1))
    assert pulse_or_unit.all()
    rest = torch.cat([vec[:, :8], vec[:, 10:]], 1)
    assert ((rest >= -1e-6) & (rest <= 1 + 1e-6)).all(), rest
    for a, b in ((11, 14), (30, 33), (20, 22)):  # one-hot groups every space fills
        assert torch.all(vec[:, a:b].sum(1) == 1) and set(vec[:, a:b].unique().tolist()) <= {0.0, 1.0}
    assert set(vec[:, 19].unique().tolist()) <= {0.0, 1.0}  # gray flag
    if name == 'severe_degrade_two_stage':
        for a, b in ((15, 18), (24, 26), (28, 30)):
            assert torch.all(vec[:, a:b].sum(1) == 1)
        assert bool((vec[:, 9] == 1).all()) == second_blur
    else:  # the slots of the second stage and the final sinc stay empty
        for a, b in ((4, 10), (14, 18), (22, 26), (27, 30)):
            assert torch.all(vec[:, a:b] == 0), (a, b)


@pytest.mark.parametrize('name', DEGRADATION_SPACES)
def test_vector_ranges_and_slots(name):
    deg = _deg()
    g = torch.Generator().manual_seed(3)
    for _ in range(6):
        lq, vec = deg(_gt(), g, space=name)
        assert lq.shape == (4, 3, GT_SIZE // 4, GT_SIZE // 4)
        assert torch.equal(lq, (lq * 255).round() / 255)  # quantised
        _check_vector(vec, name, deg.spaces[name].last_params['second_blur'])


def test_space_drawn_per_call_and_recorded():
    deg = _deg()
    g = torch.Generator().manual_seed(4)
    seen = set()
    for _ in range(12):
        _, vec = deg(_gt(2), g)
        seen.add(deg.last_space)
        _check_vector(vec, deg.last_space, deg.spaces[deg.last_space].last_params['second_blur'])
    assert seen == set(DEGRADATION_SPACES)


def _norm(v, lo, hi):
    return (v - lo) / (hi - lo)


@pytest.mark.parametrize('gaussian', [True, False])
def test_weak_space_is_the_one_stage_chain_and_vector_matches_its_draws(gaussian):
    """Replaying the documented chain with the building blocks and the same generator gives the
    same LQ; the vector equals the recorded draws normalised with DASR's weak-space ranges."""
    top = {'gaussian_noise_prob_weak1': 1.0 if gaussian else 0.0}
    deg = _deg(top)
    gt = _gt(3, seed=5)
    g = torch.Generator().manual_seed(6)
    state = g.get_state()
    lq, vec = deg(gt, g, space='weak_degrade_one_stage')
    space = deg.spaces['weak_degrade_one_stage']
    p = space.last_params

    # replay: kernels, 16 per-batch draws, noise, JPEG, final resize, quantisation
    g.set_state(state)
    kernels, kp = space.kernels.sample(3, g, 'cpu', return_params=True)
    u = torch.rand(16, generator=g, dtype=torch.float64).tolist()
    probs = TOP['resize_prob_weak1']
    direction = 0 if u[0] < probs[0] else 1 if u[0] < probs[0] + probs[1] else 2
    factor = [1 + u[1] * (1.2 - 1), 0.85 + u[1] * (1 - 0.85), 1.0][direction]
    mode, mode_final = MODES[int(u[2] * 3)], MODES[int(u[10] * 3)]
    assert (factor, mode, mode_final) == (p['factor1'], p['mode1'], p['mode_final'])
    out = filter2D(gt, kernels['kernel1'])
    out = F.interpolate(out, scale_factor=factor, mode=mode, **({} if mode == 'area' else {'align_corners': False}))
    if gaussian:
        out, level, gray = random_add_gaussian_noise_pt(out, [1, 10], 0.4, generator=g, return_params=True)
    else:
        out, level, gray = random_add_poisson_noise_pt(out, [0.05, 0.5], 0.4, generator=g, return_params=True)
    q = torch.rand(3, generator=g) * 5 + 90
    out = DiffJPEG(differentiable=False)(out.clamp(0, 1), quality=q)
    out = F.interpolate(out, size=(GT_SIZE // 4, ) * 2, mode=mode_final,
                        **({} if mode_final == 'area' else {'align_corners': False}))
    assert torch.equal(lq, torch.clamp((out * 255).round(), 0, 255) / 255)

    k = kp['kernel1']
    expected = torch.zeros(3, 33, dtype=torch.float64)
    expected[:, 0] = _norm(k['size'].double(), 7, 21)
    expected[:, 1] = _norm(k['sig_x'], 0.2, 0.8)
    expected[:, 2] = _norm(k['sig_y'], 0.2, 0.8)
    expected[:, 3] = _norm(k['theta'], -math.pi, math.pi)
    expected[:, 10] = _norm(factor, 0.85, 1.2)
    expected[:, 11 + MODES.index(mode)] = 1
    expected[:, 18] = _norm(level.double(), *([1, 10] if gaussian else [0.05, 0.5]))
    expected[:, 19] = gray.double()
    expected[:, 20 if gaussian else 21] = 1
    expected[:, 26] = _norm(q.double(), 90, 95)
    expected[:, 30 + MODES.index(mode_final)] = 1
    torch.testing.assert_close(vec, expected.float(), rtol=0, atol=1e-6)


def test_severe_vector_matches_its_draws():
    deg = _deg()
    g = torch.Generator().manual_seed(7)
    for _ in range(8):
        lq, vec = deg(_gt(3, seed=8), g, space='severe_degrade_two_stage')
        space = deg.spaces['severe_degrade_two_stage']
        p = space.last_params
        assert lq.shape == (3, 3, GT_SIZE // 4, GT_SIZE // 4)
        torch.testing.assert_close(vec[:, 10], torch.full((3, ), _norm(p['factor1'], 0.15, 1.5)).float())
        torch.testing.assert_close(vec[:, 14], torch.full((3, ), _norm(p['factor2'], 0.3, 1.2)).float())
        lo, hi = [1, 30] if p['gaussian1'] else [0.05, 3]
        torch.testing.assert_close(vec[:, 18], _norm(p['noise1'], lo, hi).float())
        lo, hi = [1, 25] if p['gaussian2'] else [0.05, 2.5]
        torch.testing.assert_close(vec[:, 22], _norm(p['noise2'], lo, hi).float())
        torch.testing.assert_close(vec[:, 26], _norm(p['jpeg1'], 30, 95).float())
        torch.testing.assert_close(vec[:, 27], _norm(p['jpeg2'], 30, 95).float())
        assert torch.all(vec[:, 28] == float(p['order_a'])) and torch.all(vec[:, 29] == float(not p['order_a']))
        assert torch.all(vec[:, 9] == 1) == p['second_blur']


def test_no_final_sinc_records_the_reference_values():
    """Without the final sinc DASR records size 0 and omega 0: -0.5 after normalisation."""
    deg = _deg({'second_blur_prob': 0.0}, {'final_sinc_prob': 0.0})
    _, vec = deg(_gt(2), torch.Generator().manual_seed(9), space='severe_degrade_two_stage')
    assert torch.all(vec[:, 8] == -0.5) and torch.all(vec[:, 9] == -0.5)
    deg = _deg({'second_blur_prob': 0.0}, {'final_sinc_prob': 1.0})
    _, vec = deg(_gt(2), torch.Generator().manual_seed(9), space='severe_degrade_two_stage')
    assert torch.all(vec[:, 8] >= (9 - 7) / 14) and torch.all((vec[:, 9] >= 0) & (vec[:, 9] <= 1))


def test_sinc_blur_kernel_gives_zero_sigma_slots():
    deg = _deg(train={'sinc_prob_weak1': 1.0})
    g = torch.Generator().manual_seed(10)
    _, vec = deg(_gt(2), g, space='weak_degrade_one_stage')
    assert torch.isfinite(vec).all() and torch.all(vec[:, 1:4] == 0) and torch.all(vec[:, 0] > 0)
    kinds = deg.spaces['weak_degrade_one_stage'].kernels.sample_params(4, g)['kernel1']['kind']
    assert torch.all(kinds == SINC)


def test_same_seed_same_batch():
    a = _deg()(_gt(), torch.Generator().manual_seed(11))
    b = _deg()(_gt(), torch.Generator().manual_seed(11))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_pool_keeps_vectors_with_their_images():
    """Every pair the pool hands out carries the vector made with its LQ (the reference
    shuffles lq/gt but not the vectors)."""
    deg = _deg()
    g = torch.Generator().manual_seed(12)
    pool = TrainingPairPool(12, 4)
    made = {}
    for step in range(12):
        gt = _gt(4, seed=100 + step)
        lq, vec = deg(gt, g)
        for i in range(4):
            made[lq[i].numpy().tobytes()] = vec[i].clone()
        out = pool({'lq': lq, 'gt': gt, 'params': vec}, g)
        for i in range(4):
            assert torch.equal(made[out['lq'][i].numpy().tobytes()], out['params'][i])
    assert pool.ptr == 12  # the pool filled and then mixed batches


def test_option_errors():
    with pytest.raises(ValueError, match='unknown degradation space'):
        _deg({'degree_list': ['weak_degrade_one_stage', 'mild'], 'degree_prob': [0.5, 0.5]})
    with pytest.raises(ValueError, match='degree_prob'):
        _deg({'degree_prob': [0.5, 0.5]})
    with pytest.raises(ValueError, match='per_sample'):
        _deg({'per_sample': True})
    with pytest.raises(ValueError, match="resize_prob"):
        _deg({'resize_prob_weak1': [0.5, 0.6, 0.1]})
    with pytest.raises(ValueError, match='kernel_prob'):
        _deg(train={'kernel_prob_standard1': [0.5, 0.6]})
    deg = _deg({'degree_list': ['weak_degrade_one_stage'], 'degree_prob': [1.0]})
    with pytest.raises(ValueError, match='not in degree_list'):
        deg(_gt(1), torch.Generator(), space='severe_degrade_two_stage')


@pytest.mark.skipif(not os.path.isfile(SEED_FILE), reason=f'{SEED_FILE} is absent: the reference data in ../shared (or $REALSR_SHARED) is needed')
def test_cddnet_seed_file_configures_the_spaces():
    with open(SEED_FILE) as f:
        opt = yaml.safe_load(f)
    deg = DASRDegradation(opt, opt['datasets']['train'], opt['scale'])
    assert deg.names == list(DEGRADATION_SPACES) and deg.probs == [0.3, 0.3, 0.4]
    assert deg.spaces['weak_degrade_one_stage'].opt['jpeg_range'] == [90, 95]
    assert deg.spaces['standard_degrade_one_stage'].opt['noise_range'] == [1, 20]
    lq, vec = deg(torch.rand(2, 3, 128, 128), torch.Generator().manual_seed(0))
    assert lq.shape == (2, 3, 32, 32) and vec.shape == (2, 33)


@pytest.mark.skipif(not os.path.isfile(SEED_FILE), reason=f'{SEED_FILE} is absent: the reference data in ../shared (or $REALSR_SHARED) is needed')
def test_show_degradations_groups_columns_by_space(tmp_path):
    import subprocess
    import sys

    import cv2

    from conftest import REPO_ROOT, write_pair_folders
    folders = write_pair_folders(tmp_path / 'data', n_train=2, n_val=1, hr_size=48)
    out = tmp_path / 'grid.png'
    proc = subprocess.run([sys.executable, str(REPO_ROOT / 'scripts' / 'show_degradations.py'), '-opt', SEED_FILE,
                           '--num', '2', '--variants', '2', '--out', str(out), '--force_yml',
                           f"datasets:train:dataroot_gt={folders['train_gt']}", 'datasets:train:meta_info=~',
                           'datasets:train:io_backend:type=disk', 'datasets:train:crop_pad_size=96'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grid = cv2.imread(str(out))
    assert grid.shape == (2 * 96, (1 + 3 * 2) * 96, 3)  # GT + 2 LQ per space (weak, standard, severe)
