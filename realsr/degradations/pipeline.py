"""Real-ESRGAN's second-order degradation as one module: GT batch + ``torch.Generator`` in,
LQ batch out, everything on the GT's device.

Order (``spec/degradations.md`` A.2): blur (kernel1) -> random resize relative to the GT size ->
Gaussian or Poisson noise -> JPEG; second stage: blur (kernel2, with ``second_blur_prob``) ->
random resize to an absolute size (``GT / scale * factor``) -> noise; final stage, order A
(resize to GT/scale, sinc filter, JPEG) or B (JPEG, resize, sinc) with one coin per batch;
quantisation to 8 bits. Which draws are per batch (resize direction, factor and mode, noise
type, second blur, final order) and which per sample (kernels, noise strengths, gray flags, JPEG
qualities) is exactly the reference's. All draws come from the generator, so the same seed on the
same device gives the same LQ batch.

``per_sample: true`` (a top-level option, default false) draws every one of those per-batch
choices per sample instead: the resize direction, factor and mode of the first, second and final
resize, Gaussian or Poisson noise at each stage, whether the second blur applies, and the final
order. Each sample is then degraded as it would be alone with its own choices (up to the noise
fields themselves, drawn for the whole batch; the gray Gaussian field stays shared by the batch,
as in the reference), still in one batched computation on the GT's device with no Python loop over
samples. Samples of different sizes live in a common canvas (each at the top-left, zero elsewhere,
its size tracked as tensors) and the ops are region-aware (:mod:`realsr.degradations.region_ops`):
a per-sample resize that reproduces ``F.interpolate`` on the sample alone (to float32 rounding),
``filter2D`` with reflection at each sample's own border (bit-exact), JPEG of the zeroed canvas (a
sample's blocks are those it has alone) and Poisson noise whose level count sees only the sample's
own values. The canvas sizes follow from the option ranges (the largest possible size), so no size
is read back from the device. Noise of both kinds and both final orders are computed for the whole
batch and each sample keeps its own, so the random stream (and the LQ for a seed) differs from the
per-batch mode. The draws of the last call are kept in ``last_params`` ((b,) tensors; see
:meth:`SecondOrderDegradation._degrade_per_sample`).

With ``per_sample`` the training-pair pool, which exists only to mix the per-batch choices, is
not needed: the Real-ESRGAN models disable it (and log why) unless ``queue_size`` is set
explicitly in the option file, in which case the pool of that size is used as usual.

Host syncs: a call reads at most ONE set of values back from the device, the per-batch numbers
(``_BATCH_DRAWS`` uniforms drawn together, one ``.tolist()``), which the Python control flow
(resize mode and size, noise type, second blur, final order) needs. ``per_sample: true`` reads
nothing back (its choices stay tensors). Everything else stays on the device: the kernels, the
noise (gray noise is blended with the 0/1 flags, never tested; the Poisson level count has a fixed
shape), JPEG (its qualities are not checked, they come from the validated ranges) and the crop
window of :func:`paired_random_crop_batch` (gathered with device offsets).
"""
import math

import torch
from torch.nn import functional as F

from realsr import option_defs as defs
from realsr.degradations.filters import filter2D
from realsr.degradations.jpeg import DiffJPEG
from realsr.degradations.kernel_synthesis import KernelSynthesizer
from realsr.degradations.noise import random_add_gaussian_noise_pt, random_add_poisson_noise_pt
from realsr.degradations.region_ops import fill_invalid, region_filter2D, region_resize, zero_invalid

# The two stages' keys and their defaults (Real-ESRGAN's values), from the option definitions.
DEFAULTS = {o.name: o.default for o in defs.DEGRADATION_TOP
            if o.name.rstrip('2') in defs.STAGE_KEYS or o.name == 'second_blur_prob'}
# The official kernel settings (datasets.train of the same file), for tools and tests.
OFFICIAL_KERNEL_OPT = {
    'kernel_list': ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso'],
    'kernel_prob': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], 'sinc_prob': 0.1, 'blur_sigma': [0.2, 3],
    'betag_range': [0.5, 4], 'betap_range': [1, 2],
    'kernel_list2': ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso'],
    'kernel_prob2': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], 'sinc_prob2': 0.1, 'blur_sigma2': [0.2, 1.5],
    'betag_range2': [0.5, 4], 'betap_range2': [1, 2], 'final_sinc_prob': 0.8,
}
RESIZE_MODES = ('area', 'bilinear', 'bicubic')
_BATCH_DRAWS = 16  # per-batch uniform numbers, drawn and fetched at once: the one device sync of a batch
_SAMPLE_DRAWS = 11  # per-sample uniform numbers (the per-batch choices, drawn per sample)


def _check_probs(key, probs, n):
    if len(probs) != n or any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
        raise ValueError(f"'{key}' must be {n} non-negative probabilities summing to 1 (up, down, keep), got {probs}")


def _check_range(key, rng, low=None):
    if len(rng) != 2 or rng[0] > rng[1] or (low is not None and rng[0] < low):
        raise ValueError(f"'{key}' must be [low, high] with low <= high" + (f' and low >= {low}' if low is not None
                                                                             else '') + f', got {rng}')


class SecondOrderDegradation:
    """The degradation model. ``opt``: the top-level option keys (``DEFAULTS``); ``kernel_opt``:
    the train dataset's kernel keys (``kernel_list``, ``blur_sigma``, ...); ``scale``: the SR scale."""

    def __init__(self, opt, kernel_opt, scale):
        self.opt = {k: defs.value(opt, defs.DEGRADATION_TOP, k) for k in DEFAULTS}
        self.scale = int(scale)
        for suffix in ('', '2'):
            _check_probs(f'resize_prob{suffix}', self.opt[f'resize_prob{suffix}'], 3)
            _check_range(f'resize_range{suffix}', self.opt[f'resize_range{suffix}'], low=1e-3)
            _check_range(f'noise_range{suffix}', self.opt[f'noise_range{suffix}'], low=0)
            _check_range(f'poisson_scale_range{suffix}', self.opt[f'poisson_scale_range{suffix}'], low=0)
            _check_range(f'jpeg_range{suffix}', self.opt[f'jpeg_range{suffix}'], low=1)
        per_sample = defs.value(opt, defs.DEGRADATION_TOP, 'per_sample')
        if per_sample not in (True, False, None):
            raise ValueError(f"'per_sample' must be true or false, got {per_sample!r}")
        self.per_sample = bool(per_sample)
        self.last_params = None  # the per-sample draws of the last call (per_sample mode only)
        self.kernels = KernelSynthesizer(kernel_opt)
        self.jpeger = DiffJPEG(differentiable=False, check_quality=False)  # qualities from jpeg_range

    def to(self, device):
        self.jpeger = self.jpeger.to(device)
        return self

    def _check_size(self, h, w, kernel_size):
        """The blur kernels need images larger than their reflect padding wherever they are
        applied: the GT, the first-stage output (for the second blur) and the LQ size (sinc)."""
        pad = kernel_size // 2
        opt = self.opt
        shrink = opt['resize_range'][0] if opt['resize_prob'][1] > 0 else 1.0
        smallest = min(int(min(h, w) * shrink) if opt['second_blur_prob'] > 0 else min(h, w), min(h, w) // self.scale)
        if smallest <= pad:
            need = max(math.ceil((pad + 1) / shrink) if opt['second_blur_prob'] > 0 else 0, (pad + 1) * self.scale)
            raise ValueError(f'GT crops of {h}x{w} are too small for these degradation settings: an image can shrink to '
                             f'{smallest} px, but the {kernel_size}x{kernel_size} kernels need more than {pad}. '
                             f'Use crop_pad_size (or GT images) of at least {need} px (Real-ESRGAN uses 400), or raise '
                             f'resize_range[0] ({opt["resize_range"][0]}).')

    # -- pieces ---------------------------------------------------------------------------
    @staticmethod
    def _pick(u, probs):
        """Index chosen by the uniform number ``u`` with ``probs`` (like random.choices)."""
        acc = 0.0
        for i, p in enumerate(probs):
            acc += p
            if u < acc:
                return i
        return len(probs) - 1

    def _resize_factor(self, u_dir, u_scale, probs, rng):
        direction = ('up', 'down', 'keep')[self._pick(u_dir, probs)]
        if direction == 'up':
            return 1 + u_scale * (rng[1] - 1)
        if direction == 'down':
            return rng[0] + u_scale * (1 - rng[0])
        return 1.0

    @staticmethod
    def _mode(u):
        return RESIZE_MODES[min(int(u * len(RESIZE_MODES)), len(RESIZE_MODES) - 1)]

    @staticmethod
    def _interpolate(x, mode, **kwargs):
        if mode == 'area':
            return F.interpolate(x, mode=mode, **kwargs)
        return F.interpolate(x, mode=mode, align_corners=False, **kwargs)

    def _noise(self, out, gaussian, suffix, generator):
        """Gaussian (``gaussian``) or Poisson noise; returns (out, level, gray) with the per-sample
        sigma (0..255 units) or Poisson scale and gray flags."""
        opt = self.opt
        if gaussian:
            return random_add_gaussian_noise_pt(out, sigma_range=opt[f'noise_range{suffix}'], clip=True, rounds=False,
                                                gray_prob=opt[f'gray_noise_prob{suffix}'], generator=generator,
                                                return_params=True)
        return random_add_poisson_noise_pt(out, scale_range=opt[f'poisson_scale_range{suffix}'],
                                           gray_prob=opt[f'gray_noise_prob{suffix}'], clip=True, rounds=False,
                                           generator=generator, return_params=True)

    def _jpeg(self, out, jpeg_range, generator):
        """JPEG with per-sample qualities ~ U(jpeg_range); returns (out, quality)."""
        b = out.size(0)
        quality = torch.rand(b, generator=generator, device=generator.device).to(out)
        quality = quality * (jpeg_range[1] - jpeg_range[0]) + jpeg_range[0]
        return self.jpeger(torch.clamp(out, 0, 1), quality=quality), quality

    def _check_call(self, gt, generator, kernels):
        if generator.device != gt.device and not (generator.device.type == gt.device.type == 'cuda'):
            raise ValueError(f'the generator is on {generator.device} but the GT batch on {gt.device}')
        _, _, ori_h, ori_w = gt.shape
        if ori_h % self.scale or ori_w % self.scale:
            raise ValueError(f'GT size {ori_h}x{ori_w} is not a multiple of the scale {self.scale}')
        if kernels is None:
            kernels = self.kernels.sample(gt.size(0), generator, gt.device)
        self._check_size(ori_h, ori_w, kernels['kernel1'].shape[-1])
        return kernels

    @staticmethod
    def draw_batch_numbers(generator, extra=0):
        """The uniform numbers behind the per-batch choices (``_BATCH_DRAWS``), after ``extra``
        numbers of the caller's, drawn at once and fetched with ONE ``.tolist()``: the only device
        sync of a batch. Returns a list of host floats."""
        return torch.rand(extra + _BATCH_DRAWS, generator=generator, device=generator.device,
                          dtype=torch.float64).tolist()

    def _batch_choices(self, generator, u=None):
        """The per-batch choices from the numbers ``u`` (host floats), drawn here when None."""
        if u is None:
            u = self.draw_batch_numbers(generator)
        if len(u) != _BATCH_DRAWS:
            raise ValueError(f'the per-batch choices need {_BATCH_DRAWS} uniform numbers, got {len(u)}')
        opt = self.opt
        return {
            'factor1': self._resize_factor(u[0], u[1], opt['resize_prob'], opt['resize_range']),
            'mode1': self._mode(u[2]), 'gaussian1': u[3] < opt['gaussian_noise_prob'],
            'second_blur': u[4] < opt['second_blur_prob'],
            'factor2': self._resize_factor(u[5], u[6], opt['resize_prob2'], opt['resize_range2']),
            'mode2': self._mode(u[7]), 'gaussian2': u[8] < opt['gaussian_noise_prob2'],
            'order_a': u[9] < 0.5, 'mode_final': self._mode(u[10])}

    def _first_order(self, gt, kernel1, generator):
        """Blur, resize relative to the input size, noise, JPEG (choices from ``last_params``;
        the per-sample noise levels, gray flags and qualities are added to it)."""
        p = self.last_params
        out = filter2D(gt, kernel1)
        out = self._interpolate(out, p['mode1'], scale_factor=p['factor1'])
        out, p['noise1'], p['gray1'] = self._noise(out, p['gaussian1'], '', generator)
        out, p['jpeg1'] = self._jpeg(out, self.opt['jpeg_range'], generator)
        return out

    @staticmethod
    def quantize(out):
        return torch.clamp((out * 255.0).round(), 0, 255) / 255.0

    # -- the whole model --------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, gt, generator, kernels=None, batch_numbers=None):
        """``gt``: (b, 3, H, W) in [0, 1]. Returns the LQ batch (b, 3, H/scale, W/scale), quantised.

        ``kernels``: the three kernels (drawn with ``generator`` when None). ``batch_numbers``: the
        numbers behind the per-batch choices, from :meth:`draw_batch_numbers`, for a caller that
        fetched them together with its own (drawn here, after the kernels, when None). The whole
        call reads ONE value set back from the device: those numbers.

        ``last_params`` then holds this call's choices: the per-batch ones (``factor1``, ``mode1``,
        ``gaussian1``, ``second_blur``, ``factor2``, ``mode2``, ``gaussian2``, ``order_a``,
        ``mode_final``) and the per-sample (b,) tensors ``noise1``/``noise2`` (sigma or Poisson
        scale), ``gray1``/``gray2`` and ``jpeg1``/``jpeg2`` (qualities)."""
        kernels = self._check_call(gt, generator, kernels)
        if self.per_sample:
            if batch_numbers is not None:
                raise ValueError('per_sample: true draws its choices per sample, on the device: batch_numbers unused')
            return self._degrade_per_sample(gt, generator, kernels)
        _, _, ori_h, ori_w = gt.shape
        s = self.scale
        self.last_params = p = self._batch_choices(generator, batch_numbers)
        out = self._first_order(gt, kernels['kernel1'], generator)

        # second order
        if p['second_blur']:
            out = filter2D(out, kernels['kernel2'])
        size = (int(ori_h / s * p['factor2']), int(ori_w / s * p['factor2']))
        out = self._interpolate(out, p['mode2'], size=size)
        out, p['noise2'], p['gray2'] = self._noise(out, p['gaussian2'], '2', generator)

        # final stage: [resize + sinc, JPEG] or [JPEG, resize + sinc]
        final_size = (ori_h // s, ori_w // s)
        if p['order_a']:
            out = self._interpolate(out, p['mode_final'], size=final_size)
            out = filter2D(out, kernels['sinc_kernel'])
            out, p['jpeg2'] = self._jpeg(out, self.opt['jpeg_range2'], generator)
        else:
            out, p['jpeg2'] = self._jpeg(out, self.opt['jpeg_range2'], generator)
            out = self._interpolate(out, p['mode_final'], size=final_size)
            out = filter2D(out, kernels['sinc_kernel'])
        return self.quantize(out)

    # -- per_sample: true ---------------------------------------------------------------------
    def _factor_bounds(self, suffix):
        """Smallest and largest resize factor the options allow (1 is always included)."""
        probs, rng = self.opt[f'resize_prob{suffix}'], self.opt[f'resize_range{suffix}']
        factors = [1.0] + ([rng[1]] if probs[0] > 0 else []) + ([rng[0]] if probs[1] > 0 else [])
        return min(factors), max(factors)

    def _resize_factors(self, u_dir, u_scale, suffix):
        """Per-sample direction (0 up, 1 down, 2 keep) and factor: :meth:`_pick` and
        :meth:`_resize_factor` on (b,) float64 tensors."""
        probs, rng = self.opt[f'resize_prob{suffix}'], self.opt[f'resize_range{suffix}']
        direction = torch.zeros_like(u_dir, dtype=torch.long)
        acc = 0.0
        for p in probs[:-1]:  # over the directions
            acc += p
            direction += (u_dir >= acc).long()
        factor = torch.where(direction == 0, 1 + u_scale * (rng[1] - 1),
                             torch.where(direction == 1, rng[0] + u_scale * (1 - rng[0]), torch.ones_like(u_scale)))
        return direction, factor

    @staticmethod
    def _modes(u):
        """Per-sample :meth:`_mode` as int64 codes (0 area, 1 bilinear, 2 bicubic)."""
        return torch.floor(u * len(RESIZE_MODES)).long().clamp(max=len(RESIZE_MODES) - 1)

    def _quality(self, b, jpeg_range, generator, like):
        quality = torch.rand(b, generator=generator, device=generator.device).to(like)
        return quality * (jpeg_range[1] - jpeg_range[0]) + jpeg_range[0]

    def _noise_per_sample(self, out, h, w, gaussian, suffix, generator):
        """Gaussian noise where ``gaussian`` (b,) is true, Poisson noise elsewhere; both are drawn
        for the whole canvas. Poisson counts the levels of the canvas with its invalid region
        filled by a value of the sample (so the count is the sample's own)."""
        opt = self.opt
        noisy_g, sigma, gray_g = random_add_gaussian_noise_pt(
            out, sigma_range=opt[f'noise_range{suffix}'], clip=True, rounds=False,
            gray_prob=opt[f'gray_noise_prob{suffix}'], generator=generator, return_params=True)
        noisy_p, scale, gray_p = random_add_poisson_noise_pt(
            fill_invalid(out, h, w), scale_range=opt[f'poisson_scale_range{suffix}'],
            gray_prob=opt[f'gray_noise_prob{suffix}'], clip=True, rounds=False, generator=generator,
            return_params=True)
        out = zero_invalid(torch.where(gaussian.view(-1, 1, 1, 1), noisy_g, noisy_p), h, w)
        return out, torch.where(gaussian, sigma, scale), torch.where(gaussian, gray_g, gray_p).bool()

    def _degrade_per_sample(self, gt, generator, kernels):
        """The pipeline with every choice drawn per sample (``per_sample: true``).

        Sets ``last_params``, a dict of (b,) tensors: ``direction1``/``direction2`` (0 up, 1 down,
        2 keep), ``factor1``/``factor2``, ``mode1``/``mode2``/``mode_final`` (0 area, 1 bilinear,
        2 bicubic), ``size1``/``size2`` ((b, 2): h, w after each resize), ``gaussian1``/
        ``gaussian2`` (True: Gaussian, False: Poisson), ``noise1``/``noise2`` (sigma or Poisson
        scale), ``gray1``/``gray2``, ``jpeg1``/``jpeg2`` (qualities), ``second_blur`` and
        ``order_a`` (True: resize + sinc, then JPEG; False: JPEG, then resize + sinc).
        """
        b, _, ori_h, ori_w = gt.shape
        s, opt, device = self.scale, self.opt, gt.device
        u = torch.rand(b, _SAMPLE_DRAWS, generator=generator, device=generator.device, dtype=torch.float64)
        u = u.to(device)
        lq_h, lq_w = ori_h // s, ori_w // s
        # Canvas sizes and the smallest sizes, from the option ranges (fixed, no device sync).
        low1, high1 = self._factor_bounds('')
        low2, high2 = self._factor_bounds('2')
        canvas1 = (math.floor(ori_h * high1), math.floor(ori_w * high1))
        least1 = (math.floor(ori_h * low1), math.floor(ori_w * low1))
        canvas2 = (int(ori_h / s * high2), int(ori_w / s * high2))
        least2 = (int(ori_h / s * low2), int(ori_w / s * low2))
        if min(least1 + least2) < 1:
            raise ValueError(f'GT crops of {ori_h}x{ori_w} can be resized to nothing with resize_range '
                             f'{opt["resize_range"]} and resize_range2 {opt["resize_range2"]} (scale {s})')

        def full(value):
            return torch.full((b, ), value, dtype=torch.long, device=device)

        # first order: blur, resize relative to the GT size (scale_factor semantics), noise, JPEG
        out = filter2D(gt, kernels['kernel1'])
        direction1, factor1 = self._resize_factors(u[:, 0], u[:, 1], '')
        mode1 = self._modes(u[:, 2])
        h1, w1 = torch.floor(ori_h * factor1).long(), torch.floor(ori_w * factor1).long()
        inv1 = (1.0 / factor1).float()  # PyTorch maps coordinates with 1 / scale_factor
        out = region_resize(out, full(ori_h), full(ori_w), h1, w1, canvas1, mode1, least1, inv1, inv1)
        gaussian1 = u[:, 3] < opt['gaussian_noise_prob']
        out, noise1, gray1 = self._noise_per_sample(out, h1, w1, gaussian1, '', generator)
        jpeg1 = self._quality(b, opt['jpeg_range'], generator, out)
        out = zero_invalid(self.jpeger(torch.clamp(out, 0, 1), quality=jpeg1), h1, w1)

        # second order: optional blur, resize to an absolute size, noise
        second_blur = u[:, 4] < opt['second_blur_prob']
        out = torch.where(second_blur.view(-1, 1, 1, 1), region_filter2D(out, h1, w1, kernels['kernel2']), out)
        direction2, factor2 = self._resize_factors(u[:, 5], u[:, 6], '2')
        mode2 = self._modes(u[:, 7])
        h2, w2 = (ori_h / s * factor2).long(), (ori_w / s * factor2).long()  # int(): truncation
        out = region_resize(out, h1, w1, h2, w2, canvas2, mode2, least2)
        gaussian2 = u[:, 8] < opt['gaussian_noise_prob2']
        out, noise2, gray2 = self._noise_per_sample(out, h2, w2, gaussian2, '2', generator)

        # final stage: both orders for the whole batch, each sample keeps its own
        order_a = u[:, 9] < 0.5
        mode_final = self._modes(u[:, 10])
        jpeg2 = self._quality(b, opt['jpeg_range2'], generator, out)
        lq_size = (full(lq_h), full(lq_w))
        first = region_resize(out, h2, w2, *lq_size, (lq_h, lq_w), mode_final, (lq_h, lq_w))
        first = filter2D(first, kernels['sinc_kernel'])
        first = self.jpeger(torch.clamp(first, 0, 1), quality=jpeg2)
        second = zero_invalid(self.jpeger(torch.clamp(out, 0, 1), quality=jpeg2), h2, w2)
        second = region_resize(second, h2, w2, *lq_size, (lq_h, lq_w), mode_final, (lq_h, lq_w))
        second = filter2D(second, kernels['sinc_kernel'])
        out = torch.where(order_a.view(-1, 1, 1, 1), first, second)

        self.last_params = {
            'direction1': direction1, 'factor1': factor1, 'mode1': mode1, 'size1': torch.stack((h1, w1), 1),
            'gaussian1': gaussian1, 'noise1': noise1, 'gray1': gray1, 'jpeg1': jpeg1, 'second_blur': second_blur,
            'direction2': direction2, 'factor2': factor2, 'mode2': mode2, 'size2': torch.stack((h2, w2), 1),
            'gaussian2': gaussian2, 'noise2': noise2, 'gray2': gray2, 'order_a': order_a, 'mode_final': mode_final,
            'jpeg2': jpeg2,
        }
        return self.quantize(out)


def paired_random_crop_batch(gts, lq, gt_patch_size, scale, generator):
    """Crop one random window (the same for the whole batch, as the reference does) from the
    LQ batch and the matching window from every GT tensor in ``gts``. The crops are copies
    (gathered with the offsets on the device, no device sync), not views."""
    h_lq, w_lq = lq.shape[-2:]
    lq_patch = gt_patch_size // scale
    for gt in gts:
        if gt.shape[-2:] != (h_lq * scale, w_lq * scale):
            raise ValueError(f'GT size {tuple(gt.shape[-2:])} is not LQ size {(h_lq, w_lq)} x scale {scale}')
    if h_lq < lq_patch or w_lq < lq_patch:
        raise ValueError(f'LQ ({h_lq}, {w_lq}) is smaller than the patch size ({lq_patch}, {lq_patch}); lower gt_size '
                         f'({gt_patch_size}) or raise crop_pad_size')
    # The offsets stay on the device (as int() they would be a device sync): the windows are gathered.
    top = torch.randint(0, h_lq - lq_patch + 1, (1, ), generator=generator, device=generator.device).to(lq.device)
    left = torch.randint(0, w_lq - lq_patch + 1, (1, ), generator=generator, device=generator.device).to(lq.device)
    lq = _window(lq, top, left, lq_patch)
    gts = [_window(gt, top * scale, left * scale, lq_patch * scale) for gt in gts]
    return gts, lq


def _window(x, top, left, size):
    """``x[..., top:top + size, left:left + size]`` (a copy) for offsets given as (1,) device tensors."""
    steps = torch.arange(size, device=x.device)
    return x[..., (top + steps).view(-1, 1), left + steps]
