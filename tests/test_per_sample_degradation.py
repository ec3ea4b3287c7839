"""``per_sample: true``: every per-batch choice of the second-order pipeline drawn per sample.

Covers the region-aware ops (each sample of a canvas processed exactly as if it were alone), the
per-sample pipeline (shapes, quantisation, determinism, per-sample variety with the configured
probabilities, exactness of the whole composition against plain ops run sample by sample), the
default path (unchanged: the same LQ as the committed per-batch pipeline), the absence of Python
loops over samples, and the pool switch of the Real-ESRGAN models."""
import collections
import importlib.util
import logging
import math
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.overrides import TorchFunctionMode

from realsr.degradations.filters import filter2D
from realsr.degradations.jpeg import DiffJPEG
from realsr.degradations.noise import count_unique_levels_pt, rgb_to_gray_pt
from realsr.degradations.pipeline import DEFAULTS, RESIZE_MODES, SecondOrderDegradation
from realsr.degradations.region_ops import (MODE_CODES, fill_invalid, region_filter2D, region_resize, resize_taps,
                                            valid_mask, zero_invalid)
from test_realesrgan import KERNEL_OPT, smooth_batch

REPO = Path(__file__).resolve().parents[1]
# The commit whose pipeline.py is the per-batch reference (before per_sample existed).
REFERENCE_COMMIT = '25a2cb98d60b7442a284b3e6d8e02b8eb26b01f7'


def canvas_batch(heights, widths, canvas, seed=0, channels=3):
    """A canvas (b, c, H, W) with random smooth-ish content in each sample's top-left region."""
    g = torch.Generator().manual_seed(seed)
    h, w = torch.tensor(heights), torch.tensor(widths)
    x = torch.rand(len(heights), channels, *canvas, generator=g)
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode='replicate'), 3, stride=1) * 0.8 + 0.2 * x
    return zero_invalid(x, h, w), h, w


def interpolate(x, mode, **kwargs):
    return F.interpolate(x, mode=mode, **kwargs) if mode == 'area' else \
        F.interpolate(x, mode=mode, align_corners=False, **kwargs)


# -- region-aware ops -------------------------------------------------------------------------
HEIGHTS, WIDTHS, CANVAS = [37, 20, 9, 30, 25, 13], [41, 33, 17, 8, 40, 15], (37, 41)


@pytest.mark.parametrize('mode', RESIZE_MODES)
@pytest.mark.parametrize('factor', [0.15, 0.37, 0.9, 1.0, 1.0007, 1.026, 1.2345, 1.5, 2.7])
def test_region_resize_scale_factor_matches_interpolate(mode, factor):
    """Stage-1 semantics: output floor(h * f), coordinates mapped with 1 / f (1.0007 and 1.026 leave
    some or all sizes unchanged, where PyTorch's bilinear kernel copies instead)."""
    x, h, w = canvas_batch(HEIGHTS, WIDTHS, CANVAS)
    b = len(HEIGHTS)
    oh, ow = torch.floor(h * torch.tensor(factor, dtype=torch.float64)).long(), \
        torch.floor(w * torch.tensor(factor, dtype=torch.float64)).long()
    ok = (oh >= 1) & (ow >= 1)  # F.interpolate refuses empty outputs
    oh, ow = oh.clamp(min=1), ow.clamp(min=1)
    out_canvas = (int(oh.max()) + 2, int(ow.max()) + 3)
    inv = torch.full((b, ), 1.0 / factor, dtype=torch.float64).float()
    out = region_resize(x, h, w, oh, ow, out_canvas, torch.full((b, ), MODE_CODES[mode]),
                        (int(oh.min()), int(ow.min())), inv, inv)
    assert out.shape == (b, 3) + out_canvas
    assert torch.equal(out, zero_invalid(out, oh, ow))  # zero outside the new regions
    for i in range(b):
        if not ok[i]:
            continue
        ref = interpolate(x[i:i + 1, :, :h[i], :w[i]], mode, scale_factor=factor)
        assert ref.shape[-2:] == (oh[i], ow[i])
        torch.testing.assert_close(out[i:i + 1, :, :oh[i], :ow[i]], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize('mode', RESIZE_MODES)
def test_region_resize_size_semantics_with_mixed_sizes_and_modes(mode):
    """Stage-2/final semantics (an absolute size per sample); one call mixing all three modes is
    also exact, sample by sample."""
    x, h, w = canvas_batch(HEIGHTS, WIDTHS, CANVAS, seed=1)
    b = len(HEIGHTS)
    oh = torch.tensor([5, 40, 27, 1, 25, 61])  # down, up, up x3, 1 px, same, up
    ow = torch.tensor([70, 11, 17, 30, 3, 8])
    for modes in (torch.full((b, ), MODE_CODES[mode]), torch.arange(b) % 3):
        out = region_resize(x, h, w, oh, ow, (61, 70), modes, (1, 3))
        assert torch.equal(out, zero_invalid(out, oh, ow))
        for i in range(b):
            ref = interpolate(x[i:i + 1, :, :h[i], :w[i]], RESIZE_MODES[int(modes[i])], size=(int(oh[i]), int(ow[i])))
            torch.testing.assert_close(out[i:i + 1, :, :oh[i], :ow[i]], ref, rtol=0, atol=1e-6)


def test_resize_taps_reproduce_pytorch_weights():
    """The 1-D weights equal PyTorch's own (read off by resizing unit impulses; for bicubic this
    needs the fused multiply-adds PyTorch's compiled kernels use). Tolerance: 1 ulp-ish."""
    for n, m in [(30, 11), (30, 37), (400, 572), (97, 14), (13, 400)]:
        eye = torch.eye(n).view(n, 1, n, 1)
        for mode in RESIZE_MODES:
            ref = interpolate(eye, mode, size=(m, 1))[:, 0, :, 0].T  # (m, n)
            idx, wgt = resize_taps(torch.tensor([n]), torch.tensor([m]), m, torch.tensor([MODE_CODES[mode]]),
                                   max(4, -(-n // m) + 1))
            mine = torch.zeros(m, n).index_put_((torch.arange(m)[:, None].expand_as(idx[0]), idx[0]), wgt[0],
                                                accumulate=True)
            torch.testing.assert_close(mine, ref, rtol=0, atol=1.2e-7 if mode == 'area' else 0)


@pytest.mark.parametrize('k', [3, 7, 21])
def test_region_filter2D_matches_filter2D_on_each_crop(k):
    heights, widths = [40, 22, 11, 35, 30], [44, 30, 40, 11, 25]
    x, h, w = canvas_batch(heights, widths, (40, 44), seed=2)
    g = torch.Generator().manual_seed(k)
    kernels = torch.rand(len(heights), k, k, generator=g)
    kernels /= kernels.sum((1, 2), keepdim=True)
    out = region_filter2D(x, h, w, kernels)
    assert torch.equal(out, zero_invalid(out, h, w))
    for i in range(len(heights)):
        ref = filter2D(x[i:i + 1, :, :h[i], :w[i]], kernels[i:i + 1])
        torch.testing.assert_close(out[i:i + 1, :, :h[i], :w[i]], ref, rtol=0, atol=1e-7)
    shared = region_filter2D(x, h, w, kernels[0])  # one kernel for the whole batch
    torch.testing.assert_close(shared[1:2, :, :22, :30], filter2D(x[1:2, :, :22, :30], kernels[0]), rtol=0, atol=1e-7)


def test_jpeg_of_zeroed_canvas_matches_each_crop():
    """DiffJPEG zero-pads to multiples of 16 at the bottom/right; on a zeroed canvas each sample
    (odd sizes included) sees the same blocks as alone."""
    heights, widths = [45, 17, 33, 8, 31], [50, 29, 16, 47, 9]
    x, h, w = canvas_batch(heights, widths, (45, 50), seed=3)
    quality = torch.tensor([30.0, 47.5, 62.25, 80.0, 95.0])
    jpeger = DiffJPEG(differentiable=False)
    out = jpeger(x, quality=quality)
    for i in range(len(heights)):
        ref = jpeger(x[i:i + 1, :, :h[i], :w[i]], quality=quality[i:i + 1])
        torch.testing.assert_close(out[i:i + 1, :, :h[i], :w[i]], ref, rtol=0, atol=1e-6)


def test_poisson_level_count_sees_only_the_valid_region():
    heights, widths = [20, 7, 13], [20, 5, 18]
    x, h, w = canvas_batch(heights, widths, (20, 20), seed=4)
    x = (x * 0.5 + 0.3) * valid_mask(h, w, 20, 20)  # no zero inside the regions: padding adds a level

    def quant(img):
        return torch.clamp((img * 255.0).round(), 0, 255) / 255.

    for convert in (lambda t: t, rgb_to_gray_pt):
        counts = count_unique_levels_pt(quant(convert(fill_invalid(x, h, w))))
        alone = torch.stack([count_unique_levels_pt(quant(convert(x[i:i + 1, :, :h[i], :w[i]])))[0]
                             for i in range(3)])
        assert torch.equal(counts, alone)
        assert not torch.equal(count_unique_levels_pt(quant(convert(x)))[1:], alone[1:])  # what the fill avoids


# -- the per-sample pipeline ------------------------------------------------------------------
@pytest.mark.parametrize('scale,size', [(4, (76, 76)), (2, (80, 76)), (4, (92, 80))])
def test_per_sample_shapes_ranges_quantisation_and_determinism(scale, size):
    deg = SecondOrderDegradation({'per_sample': True}, KERNEL_OPT, scale)
    gt = smooth_batch(6, *size)
    for seed in range(3):
        lq = deg(gt, torch.Generator().manual_seed(seed))
        assert lq.shape == (6, 3, size[0] // scale, size[1] // scale)
        assert lq.min() >= 0 and lq.max() <= 1
        assert torch.equal(lq * 255, (lq * 255).round())
        p = deg.last_params
        assert torch.equal(p['size1'][:, 0], torch.floor(size[0] * p['factor1']).long())
        assert torch.equal(p['size2'][:, 1], (size[1] / scale * p['factor2']).long())
    again = deg(gt, torch.Generator().manual_seed(2))
    assert torch.equal(lq, again)
    assert not torch.equal(lq, deg(gt, torch.Generator().manual_seed(3)))
    assert torch.equal(gt, smooth_batch(6, *size))  # the input is not modified


def test_per_sample_choices_vary_within_a_batch_with_the_configured_probabilities():
    deg = SecondOrderDegradation({'per_sample': True}, KERNEL_OPT, 4)
    gt = smooth_batch(64, 76, 76)
    draws = collections.defaultdict(list)
    for seed in range(4):
        deg(gt, torch.Generator().manual_seed(seed))
        p = deg.last_params
        if seed == 0:  # one batch already holds every kind of choice
            for key, kinds in (('direction1', 3), ('direction2', 3), ('mode1', 3), ('mode2', 3), ('mode_final', 3),
                               ('order_a', 2), ('gaussian1', 2), ('gaussian2', 2), ('second_blur', 2)):
                assert len(p[key].unique()) == kinds, key
            assert len(p['size1'][:, 0].unique()) > 20 and len(p['size2'][:, 0].unique()) > 10
        for key, value in p.items():
            draws[key].append(value)
    draws = {k: torch.cat(v) for k, v in draws.items()}
    n = len(draws['order_a'])

    def check(values, expected):
        freq = values.double().mean().item()
        assert abs(freq - expected) <= 4.5 * math.sqrt(expected * (1 - expected) / n) + 1e-9, (freq, expected)

    for suffix, key in (('', 'direction1'), ('2', 'direction2')):
        for code, prob in enumerate(DEFAULTS[f'resize_prob{suffix}']):
            check(draws[key] == code, prob)
        check(draws[f'gaussian{suffix or 1}'], DEFAULTS[f'gaussian_noise_prob{suffix}'])
    for key in ('mode1', 'mode2', 'mode_final'):
        for code in range(3):
            check(draws[key] == code, 1 / 3)
    check(draws['order_a'], 0.5)
    check(draws['second_blur'], DEFAULTS['second_blur_prob'])
    lo, hi = DEFAULTS['resize_range']
    f = draws['factor1']
    assert ((f[draws['direction1'] == 0] >= 1) & (f[draws['direction1'] == 0] < hi)).all()
    assert ((f[draws['direction1'] == 1] >= lo) & (f[draws['direction1'] == 1] < 1)).all()
    assert (f[draws['direction1'] == 2] == 1).all()


NO_NOISE = {'per_sample': True, 'noise_range': [0, 0], 'noise_range2': [0, 0], 'poisson_scale_range': [0, 0],
            'poisson_scale_range2': [0, 0]}


def test_per_sample_pipeline_equals_plain_ops_run_sample_by_sample():
    """With zero-strength noise the pipeline is a deterministic function of the recorded draws;
    each sample equals the plain ops (F.interpolate, filter2D, DiffJPEG) run on it alone. JPEG
    rounding can amplify float32 rounding differences, so a few 8-bit steps may differ."""
    scale, (height, width) = 4, (80, 76)
    deg = SecondOrderDegradation(NO_NOISE, KERNEL_OPT, scale)
    gt = smooth_batch(12, height, width, seed=5)
    g = torch.Generator().manual_seed(11)
    kernels = deg.kernels.sample(12, g, gt.device)
    lq = deg(gt, g, kernels=kernels)
    p = deg.last_params
    diffs = []
    for i in range(12):
        one = lambda t: t[i:i + 1]  # noqa: E731
        out = filter2D(gt[i:i + 1], one(kernels['kernel1']))
        out = interpolate(out, RESIZE_MODES[int(p['mode1'][i])], scale_factor=float(p['factor1'][i]))
        assert out.shape[-2:] == tuple(p['size1'][i].tolist())
        out = deg.jpeger(torch.clamp(out, 0, 1), quality=one(p['jpeg1']))  # zero noise = a clamp
        if p['second_blur'][i]:
            out = filter2D(out, one(kernels['kernel2']))
        size2 = (int(height / scale * float(p['factor2'][i])), int(width / scale * float(p['factor2'][i])))
        out = interpolate(out, RESIZE_MODES[int(p['mode2'][i])], size=size2)
        out = torch.clamp(out, 0, 1)
        final_mode, lq_size = RESIZE_MODES[int(p['mode_final'][i])], (height // scale, width // scale)
        if p['order_a'][i]:
            out = filter2D(interpolate(out, final_mode, size=lq_size), one(kernels['sinc_kernel']))
            out = deg.jpeger(torch.clamp(out, 0, 1), quality=one(p['jpeg2']))
        else:
            out = deg.jpeger(torch.clamp(out, 0, 1), quality=one(p['jpeg2']))
            out = filter2D(interpolate(out, final_mode, size=lq_size), one(kernels['sinc_kernel']))
        ref = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
        diffs.append((lq[i:i + 1] - ref).abs())
    diffs = torch.cat(diffs)
    assert (diffs > 0).double().mean() < 0.002, (diffs > 0).double().mean()
    assert diffs.mean() < 1e-4


def test_no_python_loop_over_samples():
    """The same torch calls (by name and count) for batches of 4 and 64."""

    class Count(TorchFunctionMode):

        def __init__(self):
            super().__init__()
            self.calls = collections.Counter()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls[getattr(func, '__name__', repr(func))] += 1
            return func(*args, **(kwargs or {}))

    for gray in (0.0, 1.0):  # all-colour and all-gray batches (the gray field is blended with the 0/1 flags)
        deg = SecondOrderDegradation(dict(per_sample=True, gray_noise_prob=gray, gray_noise_prob2=gray), KERNEL_OPT, 4)
        deg(smooth_batch(2, 76, 76), torch.Generator().manual_seed(0))  # warm the kernel grid cache
        counts = []
        for b in (4, 64):
            with Count() as counter:
                deg(smooth_batch(b, 76, 76), torch.Generator().manual_seed(b))
            counts.append(counter.calls)
        assert counts[0] == counts[1]
        assert counts[0]['gather'] > 0


def test_per_sample_option_is_validated_and_off_by_default():
    assert SecondOrderDegradation({}, KERNEL_OPT, 4).per_sample is False
    assert SecondOrderDegradation({'per_sample': None}, KERNEL_OPT, 4).per_sample is False
    with pytest.raises(ValueError, match="'per_sample'"):
        SecondOrderDegradation({'per_sample': 'yes'}, KERNEL_OPT, 4)
    deg = SecondOrderDegradation({'resize_range2': [0.01, 1.2], 'per_sample': True}, KERNEL_OPT, 4)
    with pytest.raises(ValueError, match='resized to nothing'):
        deg(smooth_batch(1, 76, 76), torch.Generator().manual_seed(0))


# -- the default path is unchanged ------------------------------------------------------------
def reference_pipeline_module(tmp_path):
    """pipeline.py as committed before per_sample existed, imported from a temporary file."""
    try:
        source = subprocess.run(['git', 'show', f'{REFERENCE_COMMIT}:realsr/degradations/pipeline.py'], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f'git or commit {REFERENCE_COMMIT[:10]} not available')
    path = tmp_path / 'reference_pipeline.py'
    path.write_text(source)
    spec = importlib.util.spec_from_file_location('reference_pipeline', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('opt', [{}, {'per_sample': False, 'resize_prob': [0.5, 0.3, 0.2], 'gaussian_noise_prob': 0.2}])
def test_default_path_gives_the_committed_per_batch_result(opt, tmp_path):
    old = reference_pipeline_module(tmp_path).SecondOrderDegradation(opt, KERNEL_OPT, 4)
    new = SecondOrderDegradation(opt, KERNEL_OPT, 4)
    gt = smooth_batch(3, 76, 76, seed=6)
    for seed in range(3):
        g_old, g_new = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert torch.equal(old(gt, g_old), new(gt, g_new))
        assert torch.equal(g_old.get_state(), g_new.get_state())  # the same random stream consumed
    assert isinstance(new.last_params, dict) and isinstance(new.last_params["order_a"], bool)  # per-batch choices


# -- the models' pool ---------------------------------------------------------------------------
def test_pool_is_off_with_per_sample_unless_queue_size_is_given(caplog):
    from realsr.models.realesrgan_model import pair_pool_size
    assert pair_pool_size({}) == 180
    assert pair_pool_size({'queue_size': 12}) == 12
    assert pair_pool_size({'per_sample': True, 'queue_size': 12}) == 12
    with caplog.at_level(logging.INFO, logger='realsr'):
        assert pair_pool_size({'per_sample': True}) == 0
    assert 'training-pair pool is not needed' in caplog.text


@pytest.mark.slow
def test_realesrnet_trains_with_per_sample_and_no_pool(tmp_path, seed_options_dir, monkeypatch):
    from conftest import write_pair_folders
    from realsr import train
    from test_realesrgan import seed_file_for_cpu
    folders = write_pair_folders(tmp_path / 'data', n_train=4, n_val=1, hr_size=48)
    opt = seed_file_for_cpu(seed_options_dir, 'train_realesrnet_x4plus.yml', folders, 'per_sample', total_iter=2)
    opt['per_sample'] = True
    del opt['queue_size']
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', str(tmp_path / 'o.yml')])
    assert model.degradation.per_sample and not model.pair_pool.enabled
    assert model.lq.shape == (2, 3, 8, 8)
    assert model.degradation.last_params['size1'].shape == (2, 2)
