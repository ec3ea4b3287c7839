"""DASR's three degradation spaces and its 33-value degradation-parameter vector, on the device.

DASR (and CDDNet, which inherits its data) picks one space per batch with ``degree_list`` /
``degree_prob``:

* ``weak_degrade_one_stage`` and ``standard_degrade_one_stage``: one stage of blur -> resize
  relative to the GT size -> Gaussian or Poisson noise -> JPEG, then a resize to GT/scale with a
  random mode (no sinc filter). Their keys carry the suffix ``_weak1`` / ``_standard1``
  (``resize_prob_weak1``, ``blur_sigma_standard1``, ...).
* ``severe_degrade_two_stage``: Real-ESRGAN's second-order pipeline with the unsuffixed and
  ``2``-suffixed keys (:class:`~realsr.degradations.pipeline.SecondOrderDegradation` itself).

The one-stage spaces are :class:`OneStageDegradation`, a subclass of the second-order pipeline
that runs its first stage and its final resize, so every operation and random draw is shared.

The target vector (``road_map`` [0, 10, 18, 26, 33]), each value ``(v - lo) / (hi - lo)`` over the
range of its own space and stage:

====== =====================================================================================
0-3    kernel 1: size, sigma_x, sigma_y, rotation        (size over [blur_kernel_size_minimum,
4-7    kernel 2: size, sigma_x, sigma_y, rotation         blur_kernel_size], rotation over
8-9    final sinc: size, omega_c (over [pi/3, pi])        [-pi, pi])
10-13  first resize factor, one-hot mode (area, bilinear, bicubic)
14-17  second resize factor, one-hot mode
18-21  first noise level (sigma or Poisson scale, over its own range), gray flag,
       one-hot type (Gaussian, Poisson)
22-25  the same for the second noise
26-32  JPEG quality 1, quality 2, one-hot order ([1, 0]: resize + sinc then JPEG),
       one-hot mode of the final resize
====== =====================================================================================

Slots a space does not use stay 0. Reference behaviours kept because released predictors were
trained on them: without the final sinc the reference records size 0 and omega 0, i.e. -0.5 and
-0.5 after normalisation; slot 9 (sinc omega) is overwritten with 1 when the second blur is
applied; the sinc size is normalised with the first kernel's size range. Kernel sizes are drawn
from DASR's list ``2v + 1 for v in range(ceil(min / 2), ceil(max / 2))`` ({9, 11, ..., 21} for
7 and 21). Differences: each one-stage space draws its kernel sizes from its own
``blur_kernel_size*_<space>`` keys (the reference uses the severe space's, equal in its files);
a sinc kernel in a blur slot (``sinc_prob* > 0``, which the reference cannot record and crashes on)
gives 0 for its sigma and rotation slots; ``per_sample: true`` is not supported here (a space
is one choice per batch, as in DASR).

One device sync per call: the space coin is drawn together with the chosen space's 16 per-batch
numbers and fetched with them (so, when the space is drawn, these come before the kernels); the
vector is filled from those host values and the device tensors, no constant is copied per call.
"""
import math

import torch

from realsr import option_defs as defs
from realsr.degradations.kernel_synthesis import SINC
from realsr.degradations.pipeline import RESIZE_MODES, SecondOrderDegradation

DEGRADATION_SPACES = defs.DASR_SPACES
NUM_DEGRADATION_PARAMS = 33
ROAD_MAP = (0, 10, 18, 26, 33)
_SUFFIX = {'weak_degrade_one_stage': '_weak1', 'standard_degrade_one_stage': '_standard1'}

# DASR's values (train_DASR.yml) are the defaults of these keys in realsr/option_defs.py
# (DEGRADATION_TOP for the spaces' stages, DASR_DEGRADATION_DATASET for their kernels).
_STAGE_KEYS = defs.STAGE_KEYS
_KERNEL_KEYS = ('kernel_list', 'kernel_prob', 'sinc_prob', 'blur_sigma', 'betag_range', 'betap_range')
OMEGA_RANGE = (math.pi / 3, math.pi)
ROTATION_RANGE = (-math.pi, math.pi)


def dasr_kernel_sizes(minimum, maximum):
    """DASR's kernel size list as a realsr ``kernel_range`` [min, max] of odd sizes."""
    low, high = 2 * math.ceil(minimum / 2) + 1, 2 * math.ceil(maximum / 2) - 1
    if low > high:
        raise ValueError(f'blur_kernel_size_minimum {minimum} and blur_kernel_size {maximum} leave no kernel size '
                         '(DASR draws from 2v+1 for v in range(ceil(min/2), ceil(max/2)))')
    return [low, high]


def _size_keys(suffix):
    """(minimum key, maximum key) of a stage's kernel sizes: DASR spells the second stage's
    ``blur_kernel_size2_minimum``, the others ``blur_kernel_size_minimum<suffix>``."""
    if suffix == '2':
        return 'blur_kernel_size2_minimum', 'blur_kernel_size2'
    return f'blur_kernel_size_minimum{suffix}', f'blur_kernel_size{suffix}'


class _KernelStage:
    """A blur stage's kernel options in DASR spelling and its normalisation ranges."""

    def __init__(self, train_opt, suffix):
        kernel_keys = defs.DASR_DEGRADATION_DATASET
        self.opt = {k: defs.value(train_opt, kernel_keys, k + suffix) for k in _KERNEL_KEYS}
        self.size_range = tuple(defs.value(train_opt, kernel_keys, key) for key in _size_keys(suffix))
        self.kernel_range = dasr_kernel_sizes(*self.size_range)
        self.sigma_range = tuple(self.opt['blur_sigma'])


class OneStageDegradation(SecondOrderDegradation):
    """DASR's weak / standard space: the first stage of the second-order pipeline, then a resize
    to GT/scale with a random mode, then quantisation. ``suffix``: ``'_weak1'`` or ``'_standard1'``."""

    def __init__(self, opt, train_opt, scale, suffix):
        stage_opt = {k: defs.value(opt, defs.DEGRADATION_TOP, k + suffix) for k in _STAGE_KEYS}
        stage_opt['second_blur_prob'] = 0.0  # there is no second stage (also for the size check)
        self.kernel_stage = _KernelStage(train_opt, suffix)
        kernel_opt = dict(self.kernel_stage.opt, kernel_range=self.kernel_stage.kernel_range, final_sinc_prob=0)
        kernel_opt.update({k + '2': v for k, v in self.kernel_stage.opt.items()})  # drawn, never applied
        super().__init__(stage_opt, kernel_opt, scale)
        self.suffix = suffix

    @torch.no_grad()
    def __call__(self, gt, generator, kernels=None, batch_numbers=None):
        kernels = self._check_call(gt, generator, kernels)
        _, _, ori_h, ori_w = gt.shape
        self.last_params = p = self._batch_choices(generator, batch_numbers)
        out = self._first_order(gt, kernels['kernel1'], generator)
        out = self._interpolate(out, p['mode_final'], size=(ori_h // self.scale, ori_w // self.scale))
        return self.quantize(out)


def _severe_kernel_opt(train_opt):
    stages = {suffix: _KernelStage(train_opt, suffix) for suffix in ('', '2')}
    kernel_opt = {k + suffix: v for suffix, st in stages.items() for k, v in st.opt.items()}
    kernel_opt.update(kernel_range=stages[''].kernel_range, kernel_range2=stages['2'].kernel_range,
                      final_kernel_range=stages['2'].kernel_range,  # the reference draws it from list 2
                      final_sinc_prob=defs.value(train_opt, defs.DASR_DEGRADATION_DATASET, 'final_sinc_prob'))
    return kernel_opt, stages


def _fill(vec, column, value):
    """Set a column of ``vec`` to the host number ``value`` with ``fill_`` (an indexed assignment
    of a Python number first makes a tensor of it)."""
    vec[:, column].fill_(value)


def _normalise(value, bounds):
    low, high = bounds
    return (value - low) / (high - low)


class DASRDegradation:
    """GT batch + generator in, (LQ batch, (b, 33) degradation vector) out, on the GT's device.

    Args:
        opt (dict): the top-level options (``degree_list``, ``degree_prob``, the spaces' keys).
        train_opt (dict): ``datasets.train`` (the kernel keys, with DASR's suffixes).
        scale (int): the SR scale.
    """

    def __init__(self, opt, train_opt, scale):
        names = list(defs.value(opt, defs.DEGRADATION_TOP, 'degree_list'))
        probs = list(defs.value(opt, defs.DEGRADATION_TOP, 'degree_prob'))
        unknown = [n for n in names if n not in DEGRADATION_SPACES]
        if unknown:
            raise ValueError(f'degree_list: unknown degradation space(s) {unknown}; valid: {list(DEGRADATION_SPACES)}')
        if (len(probs) != len(names) or any(p < 0 for p in probs)
                or not math.isclose(sum(probs), 1.0, abs_tol=1e-6)):
            raise ValueError(f'degree_prob must be {len(names)} non-negative probabilities summing to 1 (one per '
                             f'degree_list entry), got {probs}')
        if opt.get('per_sample'):
            raise ValueError("per_sample: true is not supported with DASR's degradation spaces (DASRModel): the "
                             'space and its choices are drawn per batch, as in DASR; remove per_sample')
        self.names, self.probs = names, probs
        self.scale = int(scale)
        self.spaces, self.kernel_stages = {}, {}
        for name in names:
            if name == 'severe_degrade_two_stage':
                kernel_opt, stages = _severe_kernel_opt(train_opt)
                self.spaces[name] = SecondOrderDegradation(opt, kernel_opt, scale)
                self.kernel_stages[name] = stages
            else:
                space = OneStageDegradation(opt, train_opt, scale, _SUFFIX[name])
                self.spaces[name] = space
                self.kernel_stages[name] = {'': space.kernel_stage}
        self.last_space = None

    def to(self, device):
        for space in self.spaces.values():
            space.to(device)
        return self

    def _pick_space(self, u):
        """The space chosen by the uniform number ``u`` (a host float) with ``degree_prob``."""
        acc = 0.0
        for name, p in zip(self.names, self.probs):
            acc += p
            if u < acc:
                return name
        return self.names[-1]

    def choose_space(self, generator):
        """A space drawn on its own (this reads one number back: not used by :meth:`__call__`)."""
        return self._pick_space(float(torch.rand(1, generator=generator, device=generator.device,
                                                 dtype=torch.float64)))

    @torch.no_grad()
    def __call__(self, gt, generator, space=None):
        """Degrade ``gt`` in one space (``space``, or one drawn with ``degree_prob``).

        One device sync per call: when the space is drawn, its coin is drawn with the space's
        per-batch numbers and fetched with them (before the kernels, which depend on the space);
        a given space draws its kernels and then its numbers, as the space alone does."""
        batch_numbers = None
        if space is None:
            coin, *batch_numbers = SecondOrderDegradation.draw_batch_numbers(generator, extra=1)
            space = self._pick_space(coin)
        if space not in self.spaces:
            raise ValueError(f'degradation space {space!r} is not in degree_list {self.names}')
        name, deg = space, self.spaces[space]
        kernel_params = deg.kernels.sample_params(gt.size(0), generator, gt.device)
        if isinstance(deg, OneStageDegradation):  # drawn for a fixed random stream, but only kernel1 is applied
            kernels = deg.kernels.build({'kernel1': kernel_params['kernel1']})
        else:
            kernels = deg.kernels.build(kernel_params)
        lq = deg(gt, generator, kernels, batch_numbers)
        self.last_space = name
        params = self.param_vector(name, kernel_params, deg.last_params, gt.size(0), gt.device)
        return lq, params

    # -- the target vector --------------------------------------------------------------------
    def param_vector(self, name, kernel_params, choices, batch, device):
        """The (b, 33) float32 normalised vector of one call (see the module docstring)."""
        deg = self.spaces[name]
        stages = self.kernel_stages[name]
        vec = torch.zeros(batch, NUM_DEGRADATION_PARAMS, dtype=torch.float64, device=device)
        vec[:, 0:4] = self._kernel_slots(kernel_params['kernel1'], stages[''])
        two_stage = name == 'severe_degrade_two_stage'
        if two_stage:
            vec[:, 4:8] = self._kernel_slots(kernel_params['kernel2'], stages['2'])
            sinc = kernel_params['sinc_kernel']
            is_sinc = sinc['kind'] == SINC
            size = torch.where(is_sinc, sinc['size'].double(), torch.zeros_like(sinc['size'].double()))
            omega = torch.where(is_sinc, sinc['omega'], torch.zeros_like(sinc['omega']))
            vec[:, 8] = _normalise(size, stages[''].size_range)
            vec[:, 9] = _normalise(omega, OMEGA_RANGE)
            if choices['second_blur']:
                _fill(vec, 9, 1.0)  # the reference records the second blur in the omega slot
        opt = deg.opt
        _fill(vec, 10, _normalise(choices['factor1'], opt['resize_range']))
        _fill(vec, 11 + RESIZE_MODES.index(choices['mode1']), 1.0)
        vec[:, 18:22] = self._noise_slots(choices, '1', '', opt)
        vec[:, 26] = _normalise(choices['jpeg1'].double(), opt['jpeg_range'])
        if two_stage:
            _fill(vec, 14, _normalise(choices['factor2'], opt['resize_range2']))
            _fill(vec, 15 + RESIZE_MODES.index(choices['mode2']), 1.0)
            vec[:, 22:26] = self._noise_slots(choices, '2', '2', opt)
            vec[:, 27] = _normalise(choices['jpeg2'].double(), opt['jpeg_range2'])
            _fill(vec, 28 if choices['order_a'] else 29, 1.0)
        _fill(vec, 30 + RESIZE_MODES.index(choices['mode_final']), 1.0)
        return vec.float()

    @staticmethod
    def _kernel_slots(params, stage):
        """size, sigma_x, sigma_y, rotation; a sinc kernel (no sigma) gives 0 for the last three."""
        not_sinc = params['kind'] != SINC
        size = _normalise(params['size'].double(), stage.size_range)

        def slot(value, bounds):
            return torch.where(not_sinc, _normalise(value, bounds), torch.zeros_like(value))

        return torch.stack((size, slot(params['sig_x'], stage.sigma_range), slot(params['sig_y'], stage.sigma_range),
                            slot(params['theta'], ROTATION_RANGE)), dim=1)

    @staticmethod
    def _noise_slots(choices, index, suffix, opt):
        """level, gray flag, one-hot type (Gaussian, Poisson), filled from host values: no
        constant tensor is copied to the device."""
        gaussian = choices[f'gaussian{index}']
        key = f'noise_range{suffix}' if gaussian else f'poisson_scale_range{suffix}'
        level = _normalise(choices[f'noise{index}'].double(), opt[key])
        gray = choices[f'gray{index}'].double()
        onehot = level.new_zeros(level.size(0), 2)
        _fill(onehot, 0 if gaussian else 1, 1.0)
        return torch.cat((level[:, None], gray[:, None], onehot), dim=1)

    # -- state -------------------------------------------------------------------------------
    def __repr__(self):
        return f'{type(self).__name__}(spaces={self.names}, probs={self.probs}, scale={self.scale})'
