"""Metrics: parity with the BasicSR 1.4.2 oracle (../shared/oracle) and behaviour checks.

The oracle values are compared at 1e-6 (PSNR, dB), 1e-8 (SSIM) and 5e-4 (NIQE: BLAS-dependent, see NIQE_TOL);
the implementation reproduces them to ~1e-13 on the reference machine type.
"""
import json
import math

import cv2
import numpy as np
import pytest
import torch

from realsr.metrics import (calculate_metric, calculate_niqe, calculate_psnr, calculate_psnr_pt, calculate_ssim,
                            calculate_ssim_pt)
from realsr.metrics.metric_util import reorder_image, to_y_channel
from realsr.registry import METRIC_REGISTRY
from realsr.utils.color_util import bgr2ycbcr, rgb2ycbcr, rgb2ycbcr_pt, ycbcr2bgr, ycbcr2rgb
from realsr.utils.matlab_functions import imresize

PSNR_TOL = 1e-6
SSIM_TOL = 1e-8
# NIQE fits generalized Gaussians and inverts a covariance matrix through numpy's BLAS/LAPACK, whose kernels
# differ between hosts (an AMX Xeon differs from this AMD EPYC by up to 9e-5). NIQE's published agreement with
# MATLAB is 4 decimals; a real change (e.g. crop_border 0 -> 1 on baboon: 0.09) is far above 5e-4.
NIQE_TOL = 5e-4

PAIR_NAMES = ['baby', 'bird', 'butterfly', 'head', 'woman', 'bridge', 'bridge_2d']
NIQE_IMAGES = ['Set14/HR/baboon.png', 'Set5/HR/baby.png', 'Set5/HR/butterfly.png', 'Set14/HR/bridge.png',
               'RealSRSet/dog.png']
NIQE_TOO_SMALL = {'RealSRSet/0014.jpg': (179, 179), 'RealSRSet/oldphoto2.png': (160, 160)}


# ------------------------------------------------------------------------------------------------
# fixtures: oracle files and images
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def metrics_oracle(oracle_dir):
    with open(oracle_dir / 'metrics.json', encoding='utf-8') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def niqe_oracle(oracle_dir):
    with open(oracle_dir / 'niqe.json', encoding='utf-8') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def metric_inputs(oracle_dir):
    with np.load(oracle_dir / 'metrics_inputs.npz') as data:
        return {k: data[k] for k in data.files}


def _read(datasets_dir, rel, flags=cv2.IMREAD_COLOR):
    path = datasets_dir / rel
    img = cv2.imread(str(path), flags)
    assert img is not None, f'cannot read {path}'
    return img


def _to_tensor(img):
    """BasicSR's img2tensor(img.astype(float32) / 255, bgr2rgb=True)[None]; 2-D -> (1, 1, H, W)."""
    x = img.astype(np.float32) / 255.
    if x.ndim == 2:
        return torch.from_numpy(x)[None, None]
    return torch.from_numpy(np.ascontiguousarray(x[..., ::-1].transpose(2, 0, 1)))[None]


@pytest.fixture(scope='module')
def pair_images(metrics_oracle, metric_inputs, datasets_dir):
    """name -> (sr, gt) as the oracle computed them (uint8 BGR HWC, or 2-D for bridge_2d)."""
    images = {}
    for pair in metrics_oracle['pairs']:
        two_d = pair['name'] == 'bridge_2d'
        gt = _read(datasets_dir, pair['hr_file'], cv2.IMREAD_UNCHANGED if two_d else cv2.IMREAD_COLOR)
        gt = gt[:gt.shape[0] - gt.shape[0] % 4, :gt.shape[1] - gt.shape[1] % 4]  # mod_crop(gt, 4)
        sr = metric_inputs['bridge_sr'][..., 0] if two_d else metric_inputs[pair['sr']['npz_key']]
        assert sr.shape == gt.shape == tuple(pair['hr_shape_as_read'])
        images[pair['name']] = sr, gt
    return images


def _pair(metrics_oracle, name):
    return next(p for p in metrics_oracle['pairs'] if p['name'] == name)


def test_oracle_lists_the_expected_cases(metrics_oracle, niqe_oracle):
    # The parametrised tests below are written out by name: make sure they cover the whole oracle.
    assert [p['name'] for p in metrics_oracle['pairs']] == PAIR_NAMES
    assert sorted(niqe_oracle['values']) == sorted(NIQE_IMAGES)
    failing = {k.split(' ')[0] for k in niqe_oracle['reference_failures']}
    assert failing == set(NIQE_TOO_SMALL)


# ------------------------------------------------------------------------------------------------
# PSNR / SSIM parity
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', PAIR_NAMES)
def test_numpy_psnr_ssim_match_oracle(name, metrics_oracle, pair_images):
    sr, gt = pair_images[name]
    for key, ref in _pair(metrics_oracle, name)['numpy'].items():
        kw = dict(crop_border=ref['crop_border'], input_order='HWC', test_y_channel=ref['test_y_channel'])
        psnr = calculate_psnr(img=sr, img2=gt, **kw)
        ssim = calculate_ssim(img=sr, img2=gt, **kw)
        assert isinstance(psnr, float) and isinstance(ssim, float)
        assert abs(psnr - ref['psnr']) <= PSNR_TOL, (key, psnr, ref['psnr'])
        assert abs(ssim - ref['ssim']) <= SSIM_TOL, (key, ssim, ref['ssim'])
        # both metrics are symmetric in their arguments
        assert abs(calculate_psnr(img=gt, img2=sr, **kw) - psnr) <= 1e-12


@pytest.mark.parametrize('name', PAIR_NAMES)
def test_torch_psnr_ssim_match_oracle(name, metrics_oracle, pair_images):
    sr, gt = pair_images[name]
    sr_t, gt_t = _to_tensor(sr), _to_tensor(gt)
    for key, ref in _pair(metrics_oracle, name)['torch'].items():
        kw = dict(crop_border=ref['crop_border'], test_y_channel=ref['test_y_channel'])
        if ref['psnr'] is None:  # 1-channel tensor with test_y_channel: the reference fails too
            for fn in (calculate_psnr_pt, calculate_ssim_pt):
                with pytest.raises(ValueError, match=r'\(N, 3, H, W\).*\(1, 1, 504, 504\)'):
                    fn(sr_t, gt_t, **kw)
            continue
        psnr = calculate_psnr_pt(sr_t, gt_t, **kw)
        ssim = calculate_ssim_pt(sr_t, gt_t, **kw)
        assert psnr.shape == ssim.shape == (1,) and psnr.dtype == ssim.dtype == torch.float64
        assert abs(psnr.item() - ref['psnr']) <= PSNR_TOL, (key, psnr.item(), ref['psnr'])
        assert abs(ssim.item() - ref['ssim']) <= SSIM_TOL, (key, ssim.item(), ref['ssim'])


def test_set5_averages_match_oracle(metrics_oracle, pair_images):
    set5 = ['baby', 'bird', 'butterfly', 'head', 'woman']
    for setting in metrics_oracle['settings']:
        key, kw = setting['key'], dict(crop_border=setting['crop_border'], test_y_channel=setting['test_y_channel'])
        ref_np = metrics_oracle['set5_average']['numpy'][key]
        ref_pt = metrics_oracle['set5_average']['torch'][key]
        psnr = np.mean([calculate_psnr(*pair_images[n], **kw) for n in set5])
        assert abs(psnr - ref_np['psnr']) <= PSNR_TOL
        # the torch versions batch: one call on the 5 images is not possible (sizes differ), so average
        psnr_pt = np.mean([calculate_psnr_pt(*map(_to_tensor, pair_images[n]), **kw).item() for n in set5])
        assert abs(psnr_pt - ref_pt['psnr']) <= PSNR_TOL


def test_torch_batch_gives_per_image_values(pair_images):
    sr, gt = pair_images['baby']
    sr_t, gt_t = _to_tensor(sr), _to_tensor(gt)
    batch_sr, batch_gt = torch.cat([sr_t, gt_t]), torch.cat([gt_t, gt_t])
    psnr = calculate_psnr_pt(batch_sr, batch_gt, crop_border=4, test_y_channel=True)
    ssim = calculate_ssim_pt(batch_sr, batch_gt, crop_border=4, test_y_channel=True)
    assert psnr.shape == ssim.shape == (2,)
    assert psnr[0].item() == pytest.approx(calculate_psnr_pt(sr_t, gt_t, 4, True).item(), abs=1e-12)
    assert psnr[1].item() == pytest.approx(80.0, abs=1e-9)  # identical images: 10*log10(1/1e-8)
    assert ssim[1].item() == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_identical_images_is_inf_and_ssim_is_one(pair_images):
    _, gt = pair_images['bird']
    assert calculate_psnr(gt, gt.copy(), crop_border=0) == math.inf
    assert calculate_ssim(gt, gt.copy(), crop_border=4, test_y_channel=True) == pytest.approx(1.0, abs=1e-12)


def test_chw_input_order_matches_hwc(pair_images):
    sr, gt = pair_images['butterfly']
    for fn in (calculate_psnr, calculate_ssim):
        hwc = fn(sr, gt, crop_border=4, test_y_channel=True)
        chw = fn(sr.transpose(2, 0, 1), gt.transpose(2, 0, 1), crop_border=4, input_order='CHW', test_y_channel=True)
        assert chw == hwc


def test_float_inputs_in_0_255_match_uint8(pair_images):
    sr, gt = pair_images['head']
    for fn in (calculate_psnr, calculate_ssim):
        assert fn(sr.astype(np.float64), gt.astype(np.float32), 4) == pytest.approx(fn(sr, gt, 4), abs=1e-12)


def test_shape_mismatch_names_both_shapes():
    a = np.zeros((32, 32, 3), np.uint8)
    b = np.zeros((32, 30, 3), np.uint8)
    for fn in (calculate_psnr, calculate_ssim):
        with pytest.raises(ValueError, match=r'\(32, 32, 3\).*\(32, 30, 3\)'):
            fn(a, b, crop_border=0)
    for fn in (calculate_psnr_pt, calculate_ssim_pt):
        with pytest.raises(ValueError, match=r'\(1, 3, 32, 32\).*\(1, 3, 32, 30\)'):
            fn(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 30), crop_border=0)


def test_unknown_input_order_names_the_value():
    a = np.zeros((16, 16, 3), np.uint8)
    for fn in (calculate_psnr, calculate_ssim):
        with pytest.raises(ValueError, match="'WHC'"):
            fn(a, a, crop_border=0, input_order='WHC')
    with pytest.raises(ValueError, match="'HCW'"):
        reorder_image(a, input_order='HCW')


# ------------------------------------------------------------------------------------------------
# NIQE
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('rel', NIQE_IMAGES)
def test_niqe_matches_oracle(rel, niqe_oracle, datasets_dir):
    img = _read(datasets_dir, rel)
    for key, ref in niqe_oracle['values'][rel].items():
        crop, convert_to = key.split('_')
        value = calculate_niqe(img, crop_border=int(crop[len('crop'):]), input_order='HWC', convert_to=convert_to)
        assert isinstance(value, float)
        assert abs(value - ref) <= NIQE_TOL, (rel, key, value, ref)


def test_niqe_baboon_matlab_value(datasets_dir):
    # the MATLAB reference value quoted by BasicSR's README
    assert round(calculate_niqe(_read(datasets_dir, 'Set14/HR/baboon.png'), 0), 4) == 5.7296


@pytest.mark.parametrize('rel', sorted(NIQE_TOO_SMALL))
def test_niqe_too_small_image_raises_clear_error(rel, datasets_dir):
    img = _read(datasets_dir, rel)
    h, w = NIQE_TOO_SMALL[rel]
    assert img.shape == (h, w, 3)
    for convert_to in ('y', 'gray'):
        with pytest.raises(ValueError, match=rf'{h}x{w} pixels.*minimum size is 96x192 or 192x96'):
            calculate_niqe(img, crop_border=0, convert_to=convert_to)
        # after cropping, the message gives the cropped size and the size before the crop
        with pytest.raises(ValueError, match=rf'{h}x{w} before crop_border=4\) is {h - 8}x{w - 8} pixels.*96x192'):
            calculate_niqe(img, crop_border=4, convert_to=convert_to)


def test_niqe_minimum_is_two_blocks(datasets_dir):
    img = _read(datasets_dir, 'Set14/HR/baboon.png')
    # two blocks side by side are enough for the covariance (the reference also gives a value)
    for crop in (img[:96, :192], img[:192, :96], img[:100, :200]):
        assert math.isfinite(calculate_niqe(crop, crop_border=0))
    for crop in (img[:96, :191], img[:95, :400], img[:191, :191]):
        with pytest.raises(ValueError, match='minimum size'):
            calculate_niqe(crop, crop_border=0)


def test_niqe_flat_image_raises_clear_error():
    # every block is flat: no finite features, no covariance (the reference dies in pinv)
    with pytest.raises(ValueError, match='only 0 of the 4 blocks'):
        calculate_niqe(np.full((200, 200, 3), 128, np.uint8), crop_border=0)


def test_niqe_layouts_and_img2_are_consistent(datasets_dir):
    img = _read(datasets_dir, 'Set5/HR/butterfly.png')
    ref = calculate_niqe(img, crop_border=0)
    assert calculate_niqe(img, 0, img2=np.zeros_like(img)) == ref  # img2 is accepted and ignored
    assert calculate_niqe(img.transpose(2, 0, 1), 0, input_order='CHW') == ref
    y = to_y_channel(img)[..., 0]
    assert calculate_niqe(y, 0, input_order='HW') == ref
    assert calculate_niqe(y, 0) == ref  # a 2-D image is taken as luminance as it is
    with pytest.raises(ValueError, match="'rgb'"):
        calculate_niqe(img, 0, convert_to='rgb')


# ------------------------------------------------------------------------------------------------
# dispatch through the registry
# ------------------------------------------------------------------------------------------------
def test_registry_holds_the_metrics():
    for name in ('calculate_psnr', 'calculate_ssim', 'calculate_niqe', 'calculate_psnr_pt', 'calculate_ssim_pt'):
        assert name in METRIC_REGISTRY
    assert METRIC_REGISTRY.get('calculate_psnr') is calculate_psnr
    assert METRIC_REGISTRY.get('calculate_niqe') is calculate_niqe


def test_calculate_metric_dispatches_and_drops_better(pair_images, datasets_dir):
    sr, gt = pair_images['woman']
    data = {'img': sr, 'img2': gt}
    opt = {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True, 'better': 'higher'}
    assert calculate_metric(data, opt) == calculate_psnr(sr, gt, 4, test_y_channel=True)
    assert opt == {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True, 'better': 'higher'}
    opt = {'type': 'calculate_ssim', 'crop_border': 4, 'input_order': 'HWC', 'test_y_channel': False}
    assert calculate_metric(data, opt) == calculate_ssim(sr, gt, 4)
    # NIQE gets img2 too (validation always passes both) and ignores it
    baboon = _read(datasets_dir, 'Set14/HR/baboon.png')
    opt = {'type': 'calculate_niqe', 'crop_border': 0, 'better': 'lower'}
    assert calculate_metric({'img': baboon, 'img2': baboon}, opt) == calculate_niqe(baboon, 0)
    opt = {'type': 'calculate_psnr_pt', 'crop_border': 4, 'test_y_channel': True, 'better': 'higher'}
    tensors = {'img': _to_tensor(sr), 'img2': _to_tensor(gt)}
    assert torch.equal(calculate_metric(tensors, opt), calculate_psnr_pt(tensors['img'], tensors['img2'], 4, True))
    with pytest.raises(KeyError, match='calculate_psnr'):
        calculate_metric(data, {'type': 'calculate_psnrr', 'crop_border': 0})


# ------------------------------------------------------------------------------------------------
# colour conversion and imresize
# ------------------------------------------------------------------------------------------------
def test_y_channel_formula():
    bgr = np.array([[[10, 200, 30], [255, 255, 255]]], np.uint8)  # B, G, R
    y = to_y_channel(bgr)
    assert y.dtype == np.float32 and y.shape == (1, 2, 1)
    expected = 16 + (24.966 * 10 + 128.553 * 200 + 65.481 * 30) / 255
    assert y[0, 0, 0] == pytest.approx(expected, abs=1e-4)
    assert y[0, 1, 0] == pytest.approx(235.0, abs=1e-4)
    gray = np.array([[[7], [250]]], np.uint8)  # 1 channel: unchanged, no 16/219 scaling
    assert np.allclose(to_y_channel(gray), gray, atol=1e-4)


def test_color_conversions():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    ycc = bgr2ycbcr(img)
    assert ycc.dtype == np.uint8
    assert np.array_equal(ycc, rgb2ycbcr(img[..., ::-1]))
    assert np.array_equal(bgr2ycbcr(img, y_only=True), ycc[..., 0])
    f = img.astype(np.float32) / 255.
    ycc_f = bgr2ycbcr(f)
    assert ycc_f.dtype == np.float32 and ycc_f.min() >= 16 / 255 - 1e-6 and ycc_f.max() <= 240 / 255 + 1e-6
    assert np.abs(ycbcr2bgr(ycc_f) - f).max() < 1e-3  # MATLAB's rounded inverse coefficients
    assert np.abs(ycbcr2rgb(ycc_f) - f[..., ::-1]).max() < 1e-3
    assert np.abs(ycbcr2bgr(ycc).astype(int) - img.astype(int)).max() <= 2
    t = torch.from_numpy(np.ascontiguousarray(f[..., ::-1].transpose(2, 0, 1)))[None]
    assert torch.allclose(rgb2ycbcr_pt(t), torch.from_numpy(ycc_f.transpose(2, 0, 1))[None], atol=1e-6)
    assert torch.allclose(rgb2ycbcr_pt(t, y_only=True)[0, 0], torch.from_numpy(ycc_f[..., 0]), atol=1e-6)
    with pytest.raises(TypeError, match='float64'):
        bgr2ycbcr(f.astype(np.float64))


def _dense_imresize_1d(n, scale):
    """Float64 MATLAB bicubic resampling matrix (out, n), symmetric borders; an independent check."""
    out = math.ceil(n * scale)
    width = 4 / scale if scale < 1 else 4.0
    mat = np.zeros((out, n))
    for i in range(out):
        u = (i + 1) / scale + 0.5 * (1 - 1 / scale)
        for j in range(math.floor(u - width / 2) - 1, math.ceil(u + width / 2) + 2):
            d = (u - j) * min(scale, 1.0)
            a = abs(d)
            k = 1.5 * a**3 - 2.5 * a**2 + 1 if a <= 1 else (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2 if a <= 2 else 0.0)
            jj = (j - 1) % (2 * n)
            mat[i, jj if jj < n else 2 * n - 1 - jj] += k
        mat[i] /= mat[i].sum()
    return mat


@pytest.mark.parametrize('scale', [0.5, 0.25, 2.0, 4.0])
def test_imresize_matches_the_matlab_formula(scale):
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 255, (21, 26, 3)).astype(np.float32)
    out = imresize(img, scale)
    ref = np.einsum('ih,hwc,jw->ijc', _dense_imresize_1d(21, scale), img.astype(np.float64),
                    _dense_imresize_1d(26, scale))
    assert out.dtype == np.float32 and out.shape == ref.shape == (math.ceil(21 * scale), math.ceil(26 * scale), 3)
    assert np.abs(out - ref).max() < 1e-3
    # 2-D numpy, CHW torch and 2-D torch give the same numbers
    assert np.array_equal(imresize(img[..., 1], scale), out[..., 1])
    t = imresize(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), scale)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert np.array_equal(t.numpy().transpose(1, 2, 0), out)
    assert np.array_equal(imresize(torch.from_numpy(img[..., 2].copy()), scale).numpy(), out[..., 2])


def test_imresize_keeps_constant_images_and_tiny_inputs():
    for scale in (0.25, 1 / 3, 0.5, 0.7, 1.5, 3.0):
        out = imresize(np.full((7, 5), 100, np.uint8), scale)
        assert np.abs(out - 100).max() < 1e-3, scale
    assert imresize(np.ones((2, 3), np.float32), 0.25).shape == (1, 1)
