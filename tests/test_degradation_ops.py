"""Degradation operators: parity with the BasicSR 1.4.2 oracle (../shared/oracle) and behaviour checks.

Observed on the reference machine type (CPU): all 19 kernels within 3e-17 (most bit-identical),
filter2D, DiffJPEG (all four outputs) and the six noise cases bit-identical, USMSharp (separable)
within 1.3e-6 of BasicSR's 2-D convolution, usm_sharp bit-identical. Tolerances below leave margin
for other BLAS builds except the noise replays, which must be exact (same CPU RNG streams).
"""
import json
import math
import random
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from realsr.degradations import kernels as K
from realsr.degradations.filters import filter2D
from realsr.degradations.jpeg import DiffJPEG, quality_to_factor
from realsr.degradations.noise import (add_gaussian_noise, add_gaussian_noise_pt, add_jpg_compression,
                                       add_poisson_noise_pt, count_unique_levels_pt, generate_gaussian_noise,
                                       generate_gaussian_noise_pt, generate_poisson_noise, generate_poisson_noise_pt,
                                       random_add_gaussian_noise, random_add_gaussian_noise_pt,
                                       random_add_jpg_compression, random_add_poisson_noise,
                                       random_add_poisson_noise_pt, rgb_to_gray_pt)
from realsr.degradations.usm import USMSharp, gaussian_kernel_1d, separable_filter2D, usm_sharp

KERNEL_TOL = 1e-12
FILTER_TOL = 1e-6
USM_TOL = 1e-5
JPEG_TOL = 1e-5

OFFICIAL_CFG = dict(
    kernel_list=['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso'],
    kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    blur_sigma=[0.2, 3],
    betag_range=[0.5, 4],
    betap_range=[1, 2],
    sinc_prob=0.1,
    kernel_list2=['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso'],
    kernel_prob2=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    blur_sigma2=[0.2, 1.5],
    betag_range2=[0.5, 4],
    betap_range2=[1, 2],
    sinc_prob2=0.1,
    final_sinc_prob=0.8,
)


@pytest.fixture(scope='module')
def ops(oracle_dir):
    with np.load(oracle_dir / 'ops.npz') as d:
        data = {k: d[k] for k in d.files}
    data['manifest'] = json.loads(str(data['manifest']))
    return data


@pytest.fixture(scope='module')
def kernel_cases(oracle_dir):
    with np.load(oracle_dir / 'kernels.npz') as d:
        n = int(d['num_cases'])
        return [(json.loads(str(d[f'case{i}_params'])), d[f'case{i}_kernel']) for i in range(n)]


def _t(ops, key):
    return torch.from_numpy(ops[key])


def _max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('case', range(19))
def test_kernel_oracle(kernel_cases, case):
    params, expected = kernel_cases[case]
    fn = getattr(K, params['function'].rsplit('.', 1)[1])
    got = fn(**params['kwargs'])
    assert got.dtype == np.float64 and got.shape == tuple(params['shape'])
    np.testing.assert_allclose(got, expected, rtol=0, atol=KERNEL_TOL)
    assert abs(got.sum() - 1) < 1e-12


def test_kernel_helpers():
    xy, xx, yy = K.mesh_grid(5)
    assert xy.shape == (5, 5, 2) and xx[0].tolist() == [-2, -1, 0, 1, 2] and yy[:, 0].tolist() == [-2, -1, 0, 1, 2]
    np.testing.assert_array_equal(xy[..., 0], xx)
    sigma = K.sigma_matrix2(2.0, 0.5, math.pi / 2)  # rotating by 90 degrees swaps the axes
    np.testing.assert_allclose(sigma, np.diag([0.25, 4.0]), atol=1e-12)
    np.testing.assert_allclose(K.pdf2(np.eye(2), xy)[2, 2], 1.0)
    # generalised Gaussian with beta 1 is the Gaussian
    np.testing.assert_allclose(K.bivariate_generalized_Gaussian(9, 1.3, 0.7, 0.4, 1.0, isotropic=False),
                               K.bivariate_Gaussian(9, 1.3, 0.7, 0.4, isotropic=False), atol=1e-15)
    sinc = K.circular_lowpass_kernel(np.pi / 3, 9)
    assert np.isfinite(sinc).all() and sinc[4, 4] == sinc.max()
    pulse = K.pulse_kernel()
    assert pulse.shape == (21, 21) and pulse.sum() == 1 and pulse[10, 10] == 1


def test_random_kernels_reproducible_and_valid():
    np.random.seed(0)
    random.seed(0)
    a = [K.random_mixed_kernels(OFFICIAL_CFG['kernel_list'], OFFICIAL_CFG['kernel_prob'], 15) for _ in range(20)]
    np.random.seed(0)
    random.seed(0)
    b = [K.random_mixed_kernels(OFFICIAL_CFG['kernel_list'], OFFICIAL_CFG['kernel_prob'], 15) for _ in range(20)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
        assert x.shape == (15, 15) and abs(x.sum() - 1) < 1e-12 and (x >= 0).all()
    with_noise = K.random_bivariate_Gaussian(11, (1, 2), (1, 2), (-1, 1), noise_range=(0.75, 1.25), isotropic=False,
                                             rng=3)
    assert abs(with_noise.sum() - 1) < 1e-12
    k_plateau = K.random_bivariate_plateau(11, (1, 2), (1, 2), (-1, 1), (1, 2), rng=np.random.default_rng(1))
    assert k_plateau.shape == (11, 11)


def test_random_gaussian_draw_order():
    """sigma_x, then (anisotropic) sigma_y and theta, all from np.random.uniform."""
    np.random.seed(7)
    got = K.random_bivariate_Gaussian(9, (0.5, 3), (0.6, 2), (-1, 1), isotropic=False)
    np.random.seed(7)
    sx, sy, th = np.random.uniform(0.5, 3), np.random.uniform(0.6, 2), np.random.uniform(-1, 1)
    np.testing.assert_array_equal(got, K.bivariate_Gaussian(9, sx, sy, th, isotropic=False))


def test_sample_reference_kernels_replay():
    """The dataset's draw order: size (random.choice), sinc coin (np), omega by size; then kernel2; then final."""
    cfg = dict(OFFICIAL_CFG, sinc_prob=1.0, sinc_prob2=1.0, final_sinc_prob=1.0)
    for seed in range(5):
        random.seed(seed)
        np.random.seed(seed)
        k1, k2, ks = K.sample_reference_kernels(cfg)
        random.seed(seed)
        np.random.seed(seed)
        expected = []
        for _ in range(2):
            size = random.choice([7, 9, 11, 13, 15, 17, 19, 21])
            np.random.uniform()
            omega = np.random.uniform(np.pi / 3, np.pi) if size < 13 else np.random.uniform(np.pi / 5, np.pi)
            expected.append(K.circular_lowpass_kernel(omega, size, pad_to=21))
        np.random.uniform()
        size = random.choice([7, 9, 11, 13, 15, 17, 19, 21])
        expected.append(K.circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), size, pad_to=21))
        for got, exp in zip((k1, k2, ks), expected):
            assert got.dtype == np.float32 and got.shape == (21, 21)
            np.testing.assert_array_equal(got, exp.astype(np.float32))


def test_sample_reference_kernels_mixed_replay():
    cfg = dict(OFFICIAL_CFG, kernel_list=['aniso'], kernel_prob=[1.0], sinc_prob=0.0, final_sinc_prob=0.0)
    random.seed(3)
    np.random.seed(3)
    k1, _, ks = K.sample_reference_kernels(cfg)
    random.seed(3)
    np.random.seed(3)
    size = random.choice([7, 9, 11, 13, 15, 17, 19, 21])
    np.random.uniform()
    random.random()  # random.choices over one type still consumes one draw
    sx, sy, th = np.random.uniform(0.2, 3), np.random.uniform(0.2, 3), np.random.uniform(-np.pi, np.pi)
    pad = (21 - size) // 2
    exp = np.pad(K.bivariate_Gaussian(size, sx, sy, th, isotropic=False), pad).astype(np.float32)
    np.testing.assert_array_equal(k1, exp)
    np.testing.assert_array_equal(ks, K.pulse_kernel())


def test_sample_reference_kernels_statistics_and_rng():
    sizes_seen, sinc_count, pulse_count = set(), 0, 0
    for i in range(300):
        k1, k2, ks = K.sample_reference_kernels(OFFICIAL_CFG, rng=i)
        for k in (k1, k2, ks):
            assert k.shape == (21, 21) and k.dtype == np.float32 and abs(float(k.sum()) - 1) < 1e-5
        nz = np.nonzero(k1.any(axis=0))[0]
        sizes_seen.add(int(nz[-1] - nz[0] + 1))
        sinc_count += int((k1 < 0).any())  # only jinc kernels have negative lobes
        pulse_count += int(ks[10, 10] == 1)
    assert pulse_count / 300 == pytest.approx(0.2, abs=0.08)
    assert 0 < sinc_count / 300 < 0.25
    assert len(sizes_seen) >= 6
    # an int rng is private and reproducible; a Generator works too
    a, b = K.sample_reference_kernels(OFFICIAL_CFG, rng=11), K.sample_reference_kernels(OFFICIAL_CFG, rng=11)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    g = K.sample_reference_kernels(OFFICIAL_CFG, rng=np.random.default_rng(0))
    assert all(k.shape == (21, 21) for k in g)
    small = K.sample_reference_kernels(dict(OFFICIAL_CFG, kernel_range=[7, 9], final_sinc_prob=0.0), rng=0)
    assert not small[0][:5].any() and not small[0][:, :5].any()  # <= 9x9 support


@pytest.mark.parametrize('call, match', [
    (lambda: K.random_bivariate_Gaussian(8, (1, 2), (1, 2), (0, 1)), 'odd'),
    (lambda: K.random_bivariate_Gaussian(9, (2, 1), (1, 2), (0, 1)), 'sigma_x_range'),
    (lambda: K.random_bivariate_Gaussian(9, (1, 2), (2, 2), (0, 1), isotropic=False), 'sigma_y_range'),
    (lambda: K.random_bivariate_Gaussian(9, (1, 2), (1, 2), (1, 0), isotropic=False), 'rotation_range'),
    (lambda: K.random_mixed_kernels(['iso', 'gauss'], [0.5, 0.5]), r"unknown kernel type.*'gauss'.*plateau_aniso"),
    (lambda: K.random_mixed_kernels(['iso', 'aniso'], [1.0]), r'kernel_prob has 1 entries but kernel_list has 2'),
    (lambda: K.random_mixed_kernels(['iso', 'aniso'], [0.5, 0.6]), r'sum to 1.*0\.5, 0\.6'),
    (lambda: K.circular_lowpass_kernel(1.0, 10), 'odd'),
    (lambda: K.sample_reference_kernels(dict(OFFICIAL_CFG, kernel_range=[7, 23])), '<= 21'),
    (lambda: K.sample_reference_kernels(dict(OFFICIAL_CFG, kernel_range=[8, 21])), 'odd'),
])
def test_kernel_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sample_reference_kernels_missing_key():
    cfg = dict(OFFICIAL_CFG)
    del cfg['sinc_prob2']
    with pytest.raises(KeyError, match='sinc_prob2'):
        K.sample_reference_kernels(cfg)


# ---------------------------------------------------------------------------------------------
# filter2D
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['filter2d_shared', 'filter2d_shared_k7', 'filter2d_per_sample'])
def test_filter2d_oracle(ops, name):
    img, kernel = _t(ops, 'input'), _t(ops, f'{name}_kernel')
    img_before, kernel_before = img.clone(), kernel.clone()
    out = filter2D(img, kernel)
    assert out.shape == img.shape and out.dtype == torch.float32
    assert _max_abs(out, _t(ops, f'{name}_out')) <= FILTER_TOL
    assert torch.equal(img, img_before) and torch.equal(kernel, kernel_before)


def test_filter2d_semantics():
    torch.manual_seed(0)
    img = torch.rand(3, 2, 12, 14)
    kernels = torch.rand(3, 5, 5)
    kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True)
    per_sample = filter2D(img, kernels)
    for i in range(3):
        alone = filter2D(img[i:i + 1], kernels[i:i + 1])
        torch.testing.assert_close(per_sample[i:i + 1], alone, rtol=0, atol=1e-6)
    shared = filter2D(img, kernels[:1])
    torch.testing.assert_close(shared, filter2D(img, kernels[0]), rtol=0, atol=0)  # (k, k) == (1, k, k)
    torch.testing.assert_close(shared, filter2D(img, kernels[:1].expand(3, 5, 5)), rtol=0, atol=1e-6)
    # correlation, not convolution: a kernel with a single tap right of centre shifts the image left
    shift = torch.zeros(1, 3, 3)
    shift[0, 1, 2] = 1
    out = filter2D(img, shift)
    torch.testing.assert_close(out[..., :-1], img[..., 1:], rtol=0, atol=0)
    # float64 and numpy kernels work
    out64 = filter2D(img.double(), kernels.numpy())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), per_sample, rtol=0, atol=1e-6)


@pytest.mark.parametrize('img_shape, kernel_shape, match', [
    ((2, 3, 16, 16), (1, 4, 4), 'odd kernel size, got k=4'),
    ((2, 3, 16, 16), (3, 5, 5), r'kernel batch \(3\) must be 1 or the image batch \(2\)'),
    ((2, 3, 16, 16), (1, 5, 3), 'square kernel'),
    ((1, 3, 8, 30), (1, 21, 21), r'image \(8x30\) is too small for reflect padding of 10'),
    ((3, 16, 16), (1, 3, 3), r'\(b, c, h, w\)'),
])
def test_filter2d_errors(img_shape, kernel_shape, match):
    with pytest.raises(ValueError, match=match):
        filter2D(torch.rand(img_shape), torch.rand(kernel_shape))


# ---------------------------------------------------------------------------------------------
# USM
# ---------------------------------------------------------------------------------------------
def test_usm_kernel(ops):
    np.testing.assert_allclose(gaussian_kernel_1d(51), cv2.getGaussianKernel(51, 0)[:, 0], rtol=0, atol=1e-15)
    for k, s in ((3, 0), (7, 0), (9, 0), (11, 0), (21, 2.5)):
        np.testing.assert_allclose(gaussian_kernel_1d(k, s), cv2.getGaussianKernel(k, s)[:, 0], rtol=0, atol=1e-15)
    usm = USMSharp()
    assert 'kernel' in dict(usm.named_buffers()) and usm.kernel.shape == (51, )
    assert usm.kernel_2d.shape == (1, 51, 51)
    assert _max_abs(usm.kernel_2d, _t(ops, 'usm_kernel')) <= 1e-9


def test_usm_oracle(ops):
    img = _t(ops, 'input')
    before = img.clone()
    out = USMSharp()(img)
    assert out.dtype == torch.float32 and torch.equal(img, before)
    assert _max_abs(out, _t(ops, 'usm_out')) <= USM_TOL
    np_in = ops['usm_np_input'].copy()
    np_out = usm_sharp(np_in)
    assert np_out.dtype == np.float32 and np.array_equal(np_in, ops['usm_np_input'])
    np.testing.assert_allclose(np_out, ops['usm_np_out'], rtol=0, atol=USM_TOL)


def test_usm_separable_equals_2d_and_dtypes(ops):
    torch.manual_seed(1)
    img = torch.rand(2, 3, 40, 36)
    usm = USMSharp()
    ref_blur = filter2D(img, _t(ops, 'usm_kernel'))
    assert _max_abs(separable_filter2D(img, usm.kernel), ref_blur) <= USM_TOL
    out64 = usm.to(torch.float64)(img.double())  # the reference fails for float64; this one works
    assert out64.dtype == torch.float64
    assert _max_abs(out64, USMSharp()(img)) <= 1e-5
    with pytest.raises(ValueError, match='too small'):
        USMSharp()(torch.rand(1, 3, 20, 20))


# ---------------------------------------------------------------------------------------------
# DiffJPEG
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('key, differentiable, quality, input_key', [
    ('jpeg_q30_95_out', False, 'jpeg_q30_95_quality_before', 'input'),
    ('jpeg_q50_out', False, 50, 'input'),
    ('jpeg_pad_out', False, 'jpeg_pad_quality_before', 'jpeg_pad_input'),
    ('jpeg_diff_q30_95_out', True, 'jpeg_q30_95_quality_before', 'input'),
])
def test_diffjpeg_oracle(ops, key, differentiable, quality, input_key):
    img = _t(ops, input_key).clone()
    img_before = img.clone()
    if isinstance(quality, str):
        quality = _t(ops, quality).clone()
        quality_before = quality.clone()
    out = DiffJPEG(differentiable=differentiable)(img, quality=quality)
    expected = _t(ops, key)
    assert out.shape == expected.shape and out.dtype == torch.float32
    diff = (out - expected).abs()
    assert diff.max().item() <= JPEG_TOL, f'max {diff.max().item()}, within 1e-5: {(diff <= 1e-5).float().mean()}'
    assert torch.equal(img, img_before)
    if torch.is_tensor(quality):
        assert torch.equal(quality, quality_before)  # BasicSR overwrites it with the factors; we must not


def test_quality_to_factor(ops):
    q = _t(ops, 'jpeg_q30_95_quality_before').clone()
    torch.testing.assert_close(quality_to_factor(q), _t(ops, 'jpeg_q30_95_quality_after'), rtol=0, atol=0)
    torch.testing.assert_close(quality_to_factor(_t(ops, 'jpeg_pad_quality_before')),
                               _t(ops, 'jpeg_pad_quality_after'), rtol=0, atol=0)
    assert torch.equal(q, _t(ops, 'jpeg_q30_95_quality_before'))
    assert quality_to_factor(50) == 1.0 and quality_to_factor(95) == pytest.approx(0.1)
    assert quality_to_factor(25) == 2.0


def test_diffjpeg_batch_matches_single_and_quality_forms():
    torch.manual_seed(2)
    img = torch.rand(8, 3, 24, 40)
    q = torch.linspace(20, 95, 8)
    jpeg = DiffJPEG(differentiable=False)
    batched = jpeg(img, q)
    for i in range(8):
        torch.testing.assert_close(batched[i:i + 1], jpeg(img[i:i + 1], q[i:i + 1]), rtol=0, atol=1e-6)
    torch.testing.assert_close(jpeg(img, 50), jpeg(img, torch.full((8, ), 50.0)), rtol=0, atol=1e-6)
    torch.testing.assert_close(jpeg(img, torch.tensor(50.0)), jpeg(img, 50), rtol=0, atol=1e-6)
    # a float64 quality with float32 images (BasicSR raises) and a float64 image both work
    torch.testing.assert_close(jpeg(img, q.double()), batched, rtol=0, atol=0)
    out64 = jpeg(img.double(), q)
    assert out64.dtype == torch.float64 and (out64 - batched.double()).abs().max() < 0.02
    with pytest.raises(ValueError, match=r'\(8,\) tensor, got shape \(3,\)'):
        jpeg(img, torch.tensor([30.0, 40.0, 50.0]))
    with pytest.raises(ValueError, match='RGB'):
        jpeg(img[:, :1], 50)


def test_diffjpeg_differentiable_gradient():
    torch.manual_seed(3)
    img = torch.rand(2, 3, 16, 16, requires_grad=True)
    DiffJPEG(differentiable=True)(img, torch.tensor([40.0, 80.0])).sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    # torch.round has a zero gradient: only the differentiable rounding lets gradients through
    img2 = img.detach().clone().requires_grad_(True)
    DiffJPEG(differentiable=False)(img2, 40).sum().backward()
    assert img2.grad.abs().max() == 0


def test_constant_buffers_follow_the_module():
    usm, jpeg = USMSharp().to('meta'), DiffJPEG().to('meta')
    assert usm.kernel.device.type == 'meta' and jpeg.dct_basis.device.type == 'meta'
    assert USMSharp().state_dict() == {} and DiffJPEG().state_dict() == {}  # constants, not checkpoint content


# ---------------------------------------------------------------------------------------------
# noise (torch)
# ---------------------------------------------------------------------------------------------
def _assert_exact(got, expected):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected), f'max abs {_max_abs(got, expected)}'


def test_gaussian_noise_oracle(ops):
    img = _t(ops, 'input')
    before = img.clone()
    sigma = torch.tensor([5.0, 25.0])
    torch.manual_seed(100)
    _assert_exact(generate_gaussian_noise_pt(img, sigma=sigma, gray_noise=0), _t(ops, 'noise_gauss_color'))
    gray = torch.tensor([1.0, 0.0])
    torch.manual_seed(101)
    _assert_exact(generate_gaussian_noise_pt(img, sigma=sigma, gray_noise=gray), _t(ops, 'noise_gauss_gray_mixed'))
    torch.manual_seed(102)
    out, s, g = random_add_gaussian_noise_pt(img, sigma_range=[1, 30], gray_prob=0.4, clip=True, rounds=False,
                                             return_params=True)
    _assert_exact(out, _t(ops, 'noise_gauss_random_out'))
    _assert_exact(s, _t(ops, 'noise_gauss_random_sigma'))
    _assert_exact(g, _t(ops, 'noise_gauss_random_gray'))
    torch.manual_seed(102)
    _assert_exact(random_add_gaussian_noise_pt(img, sigma_range=[1, 30], gray_prob=0.4), out)
    assert torch.equal(img, before) and torch.equal(sigma, torch.tensor([5.0, 25.0]))
    assert torch.equal(gray, torch.tensor([1.0, 0.0]))


def test_poisson_noise_oracle(ops):
    img = _t(ops, 'input')
    before = img.clone()
    scale = torch.tensor([0.5, 3.0])
    torch.manual_seed(103)
    _assert_exact(generate_poisson_noise_pt(img, scale=scale, gray_noise=0), _t(ops, 'noise_poisson_color'))
    torch.manual_seed(104)
    _assert_exact(generate_poisson_noise_pt(img, scale=scale, gray_noise=torch.tensor([0.0, 1.0])),
                  _t(ops, 'noise_poisson_gray_mixed'))
    torch.manual_seed(105)
    out, s, g = random_add_poisson_noise_pt(img, scale_range=[0.05, 3], gray_prob=0.4, clip=True, rounds=False,
                                            return_params=True)
    _assert_exact(out, _t(ops, 'noise_poisson_random_out'))
    _assert_exact(s, _t(ops, 'noise_poisson_random_scale'))
    _assert_exact(g, _t(ops, 'noise_poisson_random_gray'))
    assert torch.equal(img, before) and torch.equal(scale, torch.tensor([0.5, 3.0]))
    # the per-sample level counts behind vals = 2^ceil(log2(n)): [128, 256] colour, [64, 256] gray
    q = torch.clamp((img * 255).round(), 0, 255) / 255
    n = count_unique_levels_pt(q)
    assert (2.0**torch.ceil(torch.log2(n.double()))).tolist() == ops['noise_poisson_vals'].tolist()
    qg = torch.clamp((rgb_to_gray_pt(img) * 255).round(), 0, 255) / 255
    ng = count_unique_levels_pt(qg)
    assert (2.0**torch.ceil(torch.log2(ng.double()))).tolist() == ops['manifest']['noise_poisson_gray_mixed'][
        'vals_gray']


def test_unique_count_matches_torch_unique():
    torch.manual_seed(4)
    img = torch.rand(8, 3, 10, 12)
    img[1] = 0.5  # one level
    img[2] = (img[2] * 4).round() / 4  # five levels
    img[3, :, :5] = 1.0
    q = torch.clamp((img * 255).round(), 0, 255) / 255
    expected = [len(torch.unique(q[i])) for i in range(8)]
    assert count_unique_levels_pt(q).tolist() == expected


def test_noise_generator_reproducible_and_isolated():
    img = torch.rand(3, 3, 16, 16)
    for fn, kwargs in ((random_add_gaussian_noise_pt, dict(sigma_range=(1, 30), gray_prob=0.5)),
                       (random_add_poisson_noise_pt, dict(scale_range=(0.05, 3), gray_prob=0.5))):
        state = torch.get_rng_state()
        a = fn(img, generator=torch.Generator().manual_seed(5), **kwargs)
        b = fn(img, generator=torch.Generator().manual_seed(5), **kwargs)
        c = fn(img, generator=torch.Generator().manual_seed(6), **kwargs)
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


def test_noise_batch_matches_single():
    """No cross-sample leak: the batch equals its samples processed alone (same draws, colour noise)."""
    torch.manual_seed(7)
    img = torch.rand(8, 3, 12, 10)
    img[0] = (img[0] * 3).round() / 3  # very different level counts per sample
    scale = torch.linspace(0.1, 3, 8)
    g = torch.Generator().manual_seed(8)
    batched = generate_poisson_noise_pt(img, scale=scale, generator=g)
    g = torch.Generator().manual_seed(8)
    alone = torch.cat([generate_poisson_noise_pt(img[i:i + 1], scale=scale[i:i + 1], generator=g) for i in range(8)])
    assert torch.equal(batched, alone)
    # Gaussian: randn streams are not split per sample, so compare against the unit-sigma field
    sigma = torch.linspace(1, 30, 8)
    batched = generate_gaussian_noise_pt(img, sigma=sigma, generator=torch.Generator().manual_seed(9))
    unit = generate_gaussian_noise_pt(img, sigma=255.0, generator=torch.Generator().manual_seed(9))
    for i in range(8):
        torch.testing.assert_close(batched[i], unit[i] * sigma[i] / 255, rtol=1e-6, atol=0)


def test_gaussian_gray_field_shared_and_number_sigma():
    img = torch.zeros(3, 3, 8, 8)
    sigma = torch.tensor([5.0, 10.0, 20.0])
    noise = generate_gaussian_noise_pt(img, sigma, torch.ones(3), generator=torch.Generator().manual_seed(0))
    # one spatial field for the batch and for every channel, scaled by each sigma
    torch.testing.assert_close(noise[1], noise[0] * 2, rtol=1e-6, atol=0)
    torch.testing.assert_close(noise[2], noise[0] * 4, rtol=1e-6, atol=0)
    assert torch.equal(noise[0, 0], noise[0, 2])
    # a number sigma with a gray tensor works for b > 1 (BasicSR raises a shape error)
    noise = generate_gaussian_noise_pt(img, 10, torch.tensor([1.0, 0.0, 1.0]))
    assert noise.shape == img.shape and torch.equal(noise[0], noise[2])


def test_noise_clip_rounds_and_dtype():
    img = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    out = add_gaussian_noise_pt(img, sigma=torch.tensor([30.0, 30.0]), clip=True, rounds=True)
    assert out.dtype == torch.float64 and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out * 255, (out * 255).round())
    out = add_poisson_noise_pt(img, scale=2.0, clip=False, rounds=False)
    assert out.dtype == torch.float64
    with pytest.raises(ValueError, match='one value per sample'):
        generate_gaussian_noise_pt(img, sigma=torch.tensor([1.0, 2.0, 3.0]))


# ---------------------------------------------------------------------------------------------
# numpy helpers
# ---------------------------------------------------------------------------------------------
def test_numpy_noise_and_jpeg():
    rng = np.random.RandomState(0)
    img = rng.rand(16, 20, 3).astype(np.float32)
    noise = generate_gaussian_noise(img, 10, gray_noise=True, rng=np.random.RandomState(1))
    assert noise.shape == img.shape and noise.dtype == np.float32 and np.array_equal(noise[..., 0], noise[..., 2])
    np.random.seed(1)
    expected = np.float32(np.random.randn(16, 20, 3)) * 10 / 255.
    np.random.seed(1)
    np.testing.assert_array_equal(generate_gaussian_noise(img, 10), expected)
    out = add_gaussian_noise(img, 10, True, True, False)
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-9)
    a = random_add_gaussian_noise(img, (1, 10), 0.5, rng=np.random.default_rng(3))
    b = random_add_gaussian_noise(img, (1, 10), 0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    pn = generate_poisson_noise(img, 2.0, gray_noise=True, rng=np.random.RandomState(2))
    assert pn.shape == img.shape and np.array_equal(pn[..., 0], pn[..., 1])
    out = random_add_poisson_noise(img, (0.5, 1), 0.0, rng=np.random.RandomState(2))
    assert out.min() >= 0 and out.max() <= 1
    jpg = add_jpg_compression(img, 40)
    assert jpg.dtype == np.float32 and jpg.shape == img.shape
    # equals OpenCV's own float -> 8-bit path of imencode
    _, enc = cv2.imencode('.jpg', np.clip(img, 0, 1) * 255., [int(cv2.IMWRITE_JPEG_QUALITY), 40])
    np.testing.assert_array_equal(jpg, np.float32(cv2.imdecode(enc, 1)) / 255.)
    np.random.seed(5)
    r = random_add_jpg_compression(img, (30.5, 31.5))
    np.random.seed(5)
    np.testing.assert_array_equal(r, add_jpg_compression(img, int(np.random.uniform(30.5, 31.5))))


def test_package_import_is_light():
    code = 'import sys, realsr.degradations; print("torch" in sys.modules, "numpy" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['False', 'False']
