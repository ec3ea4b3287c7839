"""Batched synthesis of the Real-ESRGAN blur and sinc kernels on any torch device.

The Real-ESRGAN dataset draws three kernels per training sample (first-order blur, second-order
blur, final sinc or pulse) with numpy/scipy inside DataLoader workers, one sample at a time.
This module draws the same distribution for a whole batch at once, as tensors, with a
``torch.Generator``, and builds every kernel in one vectorised computation:

* :func:`build_kernels` turns per-sample parameter tensors into ``(b, out_size, out_size)``
  kernels. Each kernel is evaluated on a fixed ``out_size`` grid centred at
  ``(out_size - 1) / 2``, taps outside its own ``size x size`` window are zeroed and the window is
  normalised to sum 1, which equals building a ``size x size`` kernel and zero-padding it
  symmetrically (what the reference dataset does).
* :class:`KernelSynthesizer` holds the dataset's kernel options (``kernel_list``,
  ``kernel_prob``, ``blur_sigma``, ``betag_range``, ``betap_range``, ``sinc_prob``, the same with
  suffix ``2``, and ``final_sinc_prob``) and samples the three kernels for a batch: every
  parameter of the three kernels of every sample from ONE ``torch.rand`` call (each kind, the sinc
  included, by inverse CDF from one uniform number), then all kernels from ONE
  :func:`build_kernels` call (every kernel type is evaluated for the batch and each sample keeps
  its own): about 150 small torch ops per batch whatever its size, and no value read back.

No numpy and no scipy are used here, there is no Python loop over samples or kernel types, and
the constants (grid, quadrature, option tables) are built once per device.
"""
import itertools
import math
import numbers

import torch

from realsr import option_defs as defs

__all__ = [
    'KERNEL_TYPES', 'MIXED_KERNEL_TYPES', 'KIND_CODES', 'ISO', 'ANISO', 'GENERALIZED_ISO', 'GENERALIZED_ANISO',
    'PLATEAU_ISO', 'PLATEAU_ANISO', 'SINC', 'PULSE', 'DEFAULT_KERNEL_RANGE', 'REFERENCE_KERNEL_SIZE', 'bessel_j1',
    'build_kernels', 'KernelSynthesizer', 'STAGES'
]

#: Kernel kinds, in the order of their int64 codes.
KERNEL_TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso', 'sinc',
                'pulse')
#: The kinds a ``kernel_list`` may name (those of BasicSR's ``random_mixed_kernels``).
MIXED_KERNEL_TYPES = KERNEL_TYPES[:6]
KIND_CODES = {name: code for code, name in enumerate(KERNEL_TYPES)}
ISO, ANISO, GENERALIZED_ISO, GENERALIZED_ANISO, PLATEAU_ISO, PLATEAU_ANISO, SINC, PULSE = range(len(KERNEL_TYPES))

#: The reference dataset draws sizes from the odd numbers 7..21 (``kernel_range``'s default) and
#: pads every kernel to 21.
DEFAULT_KERNEL_RANGE = tuple(defs.default(defs.DEGRADATION_DATASET, 'kernel_range'))
REFERENCE_KERNEL_SIZE = 21

_GENERALIZED = (GENERALIZED_ISO, GENERALIZED_ANISO)
_PLATEAU = (PLATEAU_ISO, PLATEAU_ANISO)
_ISOTROPIC = (ISO, GENERALIZED_ISO, PLATEAU_ISO)
_PARAMETRIC = (ISO, ANISO, GENERALIZED_ISO, GENERALIZED_ANISO, PLATEAU_ISO, PLATEAU_ANISO)


# -- per-device constants ---------------------------------------------------------------------
# Every constant the synthesis needs is built once per device (and dtype) and kept here: a tensor
# made from host data per batch is a host-to-device copy per batch on a GPU.
_CONSTANTS = {}


def _constant(key, device, make):
    """``make()`` (CPU tensors: one or a tuple) moved to ``device``, built on the first use only."""
    key = (key, str(torch.device(device)))
    if key not in _CONSTANTS:
        made = make()
        _CONSTANTS[key] = tuple(t.to(device) for t in made) if isinstance(made, tuple) else made.to(device)
    return _CONSTANTS[key]


# One row per kind code: whether the kind uses sig_x, sig_y, theta, beta, omega (in that order),
# then whether it is isotropic, generalized, plateau, a pulse. One table lookup per batch
# replaces a comparison per kind code.
_PARAM_NAMES = ('sig_x', 'sig_y', 'theta', 'beta', 'omega')
_UNUSED_VALUES = (1.0, 1.0, 0.0, 1.0, 1.0)  # what build_kernels puts in a parameter a kind does not use
_NONE_VALUES = (1.0, 1.0, 0.0, 1.0, math.pi)  # what it puts in a used parameter given as None


def _kind_flags():
    rows = []
    for code in range(len(KERNEL_TYPES)):
        param = code in _PARAMETRIC
        rows.append((param, param, param, code in _GENERALIZED + _PLATEAU, code == SINC, code in _ISOTROPIC,
                     code in _GENERALIZED, code in _PLATEAU, code == PULSE))
    return torch.tensor(rows, dtype=torch.bool)


def _flags(kind):
    """Per-sample flags of ``kind`` (any shape): ``(uses, iso, generalized, plateau, pulse)``,
    ``uses`` with a last dimension over :data:`_PARAM_NAMES`."""
    flags = _constant('kind_flags', kind.device, _kind_flags)[kind]
    return (flags[..., :5], ) + flags[..., 5:].unbind(-1)


# -- Bessel J1 ------------------------------------------------------------------------------
# torch.special.bessel_j1 is off by up to ~5e-7 for arguments between about 1 and 20 (largest near
# 5), which moves sinc taps by ~2.5e-7. For small and middle arguments we therefore use Bessel's
# integral J1(x) = (1/pi) * int_0^pi cos(t - x sin t) dt with the trapezoidal rule: the integrand
# is smooth and periodic, so the rule converges geometrically (the error is of the order of
# J_{2M-1}(x)); 32 intervals give ~1e-15 for x <= 25. Above that torch's implementation is
# accurate to ~1e-15 and is used as is.
_J1_SWITCH = 25.0
_J1_INTERVALS = 32


def _j1_quadrature(dtype):
    """Nodes t, weights and -sin(t) of the trapezoidal rule on [0, pi]."""
    tau = torch.linspace(0.0, math.pi, _J1_INTERVALS + 1, dtype=dtype)
    weight = torch.full_like(tau, 1.0 / _J1_INTERVALS)
    weight[0] = weight[-1] = 0.5 / _J1_INTERVALS
    return tau, weight, -torch.sin(tau)


def bessel_j1(x):
    """Bessel function of the first kind of order 1, accurate to ~1e-15 in float64."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    tau, weight, neg_sin = _constant(('j1', x.dtype), x.device, lambda: _j1_quadrature(x.dtype))
    small = x.abs() <= _J1_SWITCH
    xs = torch.where(small, x, 0.0).unsqueeze(-1)
    phase = torch.addcmul(tau, xs, neg_sin)  # t - x sin t, shape (..., intervals + 1)
    integral = phase.cos_() @ weight
    return torch.where(small, integral, torch.special.bessel_j1(x))


# -- grids ----------------------------------------------------------------------------------
def _make_grid(out_size):
    axis = torch.arange(out_size, dtype=torch.float64) - (out_size - 1) / 2
    r2 = axis.view(-1, 1)**2 + axis.view(1, -1)**2  # integers, exact in float64
    r2_unique, radius_index = torch.unique(r2, sorted=True, return_inverse=True)
    x, y = axis.view(1, -1), axis.view(-1, 1)  # column offset, row offset
    quad_basis = torch.stack(((x * x).expand(out_size, -1), x * y, (y * y).expand(-1, out_size))).view(3, -1)
    radii = r2_unique.sqrt()
    safe_r = torch.where(radii > 0, radii, 1.0)  # the centre's jinc is set apart
    centre = (radius_index == 0).to(torch.float64)
    return (axis.abs().view(1, 1, -1), axis.abs().view(1, -1, 1), radii > 0, safe_r, radius_index, quad_basis,
            centre)


def _grid(out_size, device):
    """Constants of an ``out_size`` grid, built once per device: ``(abs_x, abs_y, off_centre,
    safe_r, radius_index, quad_basis, centre)``. ``abs_x`` (1, 1, n) / ``abs_y`` (1, n, 1): the
    absolute column / row offsets from the centre; ``safe_r`` (U,): the distinct distances to the
    centre in increasing order, with 1 in place of the centre's 0 (``off_centre`` is False there
    only); ``radius_index`` (n, n) int64: every tap's entry in ``safe_r``; ``quad_basis`` (3, n*n):
    the rows x^2, x*y, y^2; ``centre`` (n, n) float64: 1 at the centre tap, else 0."""
    return _constant(('grid', out_size), device, lambda: _make_grid(out_size))


def _per_sample(value, batch, device, fill):
    """A float64 (b,) tensor on ``device`` from a tensor, a number or None (-> ``fill``)."""
    if value is None:
        value = fill
    if isinstance(value, numbers.Real):  # filled on the device, not copied from the host
        return torch.full((batch, ), float(value), dtype=torch.float64, device=device)
    t = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f'build_kernels: a parameter has {t.numel()} values for a batch of {batch}')
    return t


def build_kernels(kind,
                  size,
                  sig_x=None,
                  sig_y=None,
                  theta=None,
                  beta=None,
                  omega=None,
                  out_size=REFERENCE_KERNEL_SIZE,
                  dtype=torch.float32,
                  check=True):
    """Build a batch of kernels from per-sample parameters in one batched computation.

    Args:
        kind (Tensor): (b,) int64 kind codes (see :data:`KERNEL_TYPES`; ``KIND_CODES[name]``).
        size (Tensor | int): (b,) odd kernel sizes (window widths), 1 <= size <= out_size. The
            pulse ignores it.
        sig_x, sig_y (Tensor | float | None): (b,) standard deviations along the kernel's own axes
            (before rotation). Isotropic kinds use ``sig_y = sig_x``.
        theta (Tensor | float | None): (b,) rotation in radians. Isotropic kinds use 0.
        beta (Tensor | float | None): (b,) shape exponent of the generalized and plateau kinds.
        omega (Tensor | float | None): (b,) cutoff frequency of the sinc kind.
        out_size (int): odd side of the output grid (the reference pads to 21).
        dtype: dtype of the result (the computation is float64).
        check (bool): validate kinds and sizes (this reads the tensors back to the host).

    Parameters a sample's kind does not use are ignored and may be NaN. Formulas, with
    ``p = (x, y)`` (x the column offset, y the row offset from the centre) and
    ``S = R diag(sig_x^2, sig_y^2) R^T``, ``R = [[cos theta, -sin theta], [sin theta, cos theta]]``,
    ``d = p^T S^-1 p``: Gaussian ``exp(-d/2)``, generalized ``exp(-0.5 d^beta)``, plateau
    ``1 / (1 + d^beta)``, sinc (jinc) ``omega J1(omega r) / (2 pi r)`` with the centre tap
    ``omega^2 / (4 pi)``, pulse 1 at the centre. Every kernel is normalised to sum 1 over its window.

    Returns:
        Tensor: (b, out_size, out_size) kernels on ``kind``'s device.
    """
    kind = torch.as_tensor(kind)
    if kind.dim() == 0:
        kind = kind.view(1)
    kind = kind.reshape(-1).long()
    device, batch = kind.device, kind.numel()
    size = torch.as_tensor(size, device=device).reshape(-1).long()
    if size.numel() == 1:
        size = size.expand(batch)
    elif size.numel() != batch:
        raise ValueError(f'build_kernels: size has {size.numel()} values for a batch of {batch}')
    if not isinstance(out_size, numbers.Integral) or out_size < 1 or out_size % 2 == 0:
        raise ValueError(f'build_kernels: out_size must be a positive odd integer, got {out_size!r}')
    if check and batch:
        if bool(((kind < 0) | (kind >= len(KERNEL_TYPES))).any()):
            raise ValueError(f'build_kernels: kind codes must lie in 0..{len(KERNEL_TYPES) - 1} '
                             f'({", ".join(KERNEL_TYPES)})')
        bad = (kind != PULSE) & ((size % 2 == 0) | (size < 1) | (size > out_size))
        if bool(bad.any()):
            raise ValueError(f'build_kernels: sizes must be odd and between 1 and out_size={out_size}, '
                             f'got {sorted(set(size[bad].tolist()))}')

    abs_x, abs_y, off_centre, safe_r, radius_index, quad_basis, centre = _grid(out_size, device)
    uses, is_iso, _, is_plateau, is_pulse = _flags(kind)
    is_sinc = uses[:, 4]  # only the sinc uses omega
    given = torch.stack([_per_sample(value, batch, device, fill)
                         for value, fill in zip((sig_x, sig_y, theta, beta, omega), _NONE_VALUES)], dim=1)
    unused = _constant('unused_values', device, lambda: torch.tensor(_UNUSED_VALUES, dtype=torch.float64))
    sx, sy, th, be, om = torch.where(uses, given, unused).unbind(1)
    sy = torch.where(is_iso, sx, sy)  # isotropic kinds: sig_y = sig_x and no rotation
    th = torch.where(is_iso, 0.0, th)

    # Gaussian, generalized Gaussian and plateau: d = p^T S^-1 p with S^-1 = R diag(1/sx^2, 1/sy^2) R^T.
    cos, sin = torch.cos(th), torch.sin(th)
    px, py = 1.0 / sx**2, 1.0 / sy**2
    # d = a x^2 + 2 b x y + c y^2 as one (b, 3) x (3, n*n) product
    coef = torch.stack((cos * cos * px + sin * sin * py, 2.0 * cos * sin * (px - py), sin * sin * px + cos * cos * py),
                       dim=1)
    d = (coef @ quad_basis).view(batch, out_size, out_size).clamp_min(0.0)
    dp = d.pow(be.view(-1, 1, 1))
    kernel = torch.where(is_plateau.view(-1, 1, 1), 1.0 / (1.0 + dp), torch.exp(-0.5 * dp))

    # Sinc (jinc), evaluated once per distinct radius and gathered onto the grid.
    om = om.view(-1, 1)
    jinc = om * bessel_j1(om * safe_r) / (2 * math.pi * safe_r)
    jinc = torch.where(off_centre, jinc, om**2 / (4 * math.pi))
    jinc = jinc[:, radius_index]
    kernel = torch.where(is_sinc.view(-1, 1, 1), jinc, kernel)
    kernel = torch.where(is_pulse.view(-1, 1, 1), centre, kernel)

    half = torch.where(is_pulse, 0, (size - 1) // 2).view(-1, 1, 1)
    kernel = torch.where((abs_x <= half) & (abs_y <= half), kernel, 0.0)
    kernel = kernel / kernel.sum(dim=(-2, -1), keepdim=True)
    return kernel.to(dtype)


# -- option validation ------------------------------------------------------------------------
def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class _Problems:

    def __init__(self):
        self.items = []

    def add(self, key, message):
        self.items.append(f'{key}: {message}')

    def raise_if_any(self):
        if self.items:
            lines = '\n'.join(f'  - {p}' for p in self.items)
            raise ValueError(f'KernelSynthesizer: {len(self.items)} invalid kernel option(s):\n{lines}')


_MISSING = object()


def _get(opt, key, problems, default=_MISSING):
    if key in opt and opt[key] is not None:
        return opt[key]
    if default is _MISSING:
        problems.add(key, 'missing (required by the Real-ESRGAN dataset)')
        return None
    return default


def _probability(opt, key, problems):
    value = _get(opt, key, problems)
    if value is None:
        return None
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        problems.add(key, f'must be a probability in [0, 1], got {value!r}')
        return None
    return float(value)


def _interval(opt, key, problems, positive=False):
    """A [low, high] pair with low < high (the reference samplers assert it)."""
    value = _get(opt, key, problems)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_number(v) for v in value):
        problems.add(key, f'must be a [low, high] pair of numbers, got {value!r}')
        return None
    low, high = float(value[0]), float(value[1])
    if not low < high:
        problems.add(key, f'needs low < high (the reference asserts it), got {list(value)!r}')
        return None
    if positive and low <= 0:
        problems.add(key, f'values must be > 0, got {list(value)!r}')
        return None
    return low, high


def _size_range(opt, key, problems, default):
    value = opt.get(key)
    if value is None:
        value = default
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) for v in value)):
        problems.add(key, f'must be a [min, max] pair of odd integers, got {value!r}')
        return None
    low, high = int(value[0]), int(value[1])
    if low % 2 == 0 or high % 2 == 0:
        problems.add(key, f'kernel sizes must be odd, got {list(value)!r}')
        return None
    if low < 1 or low > high:
        problems.add(key, f'needs 1 <= min <= max, got {list(value)!r}')
        return None
    return tuple(range(low, high + 1, 2))


class _BlurStage:
    """Options of one blur stage (first order: suffix '', second order: suffix '2')."""

    def __init__(self, opt, suffix, sizes, problems):
        self.suffix = suffix
        self.sizes = sizes
        key_list, key_prob = f'kernel_list{suffix}', f'kernel_prob{suffix}'
        kernel_list = _get(opt, key_list, problems)
        kernel_prob = _get(opt, key_prob, problems)
        self.kinds = None
        self.probs = None
        if kernel_list is not None:
            if not isinstance(kernel_list, (list, tuple)) or not kernel_list:
                problems.add(key_list, f'must be a non-empty list of kernel types, got {kernel_list!r}')
            else:
                unknown = [k for k in kernel_list if k not in MIXED_KERNEL_TYPES]
                if unknown:
                    problems.add(key_list, f'unknown kernel type(s) {unknown!r}; valid types: '
                                 f'{", ".join(MIXED_KERNEL_TYPES)}')
                else:
                    self.kinds = tuple(KIND_CODES[k] for k in kernel_list)
        if kernel_prob is not None:
            if not isinstance(kernel_prob, (list, tuple)) or not all(_is_number(p) for p in kernel_prob):
                problems.add(key_prob, f'must be a list of numbers, got {kernel_prob!r}')
            elif isinstance(kernel_list, (list, tuple)) and len(kernel_prob) != len(kernel_list):
                problems.add(key_prob, f'has {len(kernel_prob)} entries but {key_list} has {len(kernel_list)}')
            elif any(p < 0 for p in kernel_prob):
                problems.add(key_prob, f'probabilities must be >= 0, got {list(kernel_prob)!r}')
            elif abs(sum(kernel_prob) - 1.0) > 1e-6:
                problems.add(key_prob, f'probabilities must sum to 1, got {list(kernel_prob)!r} '
                             f'(sum {sum(kernel_prob):.9g})')
            else:
                self.probs = tuple(float(p) for p in kernel_prob)
        self.sinc_prob = _probability(opt, f'sinc_prob{suffix}', problems)
        self.blur_sigma = _interval(opt, f'blur_sigma{suffix}', problems, positive=True)
        kinds = self.kinds or ()
        self.betag_range = self.betap_range = (1.0, 1.0)  # unused unless the list names those kinds
        if any(k in _GENERALIZED for k in kinds):
            self.betag_range = _interval(opt, f'betag_range{suffix}', problems, positive=True)
        if any(k in _PLATEAU for k in kinds):
            self.betap_range = _interval(opt, f'betap_range{suffix}', problems, positive=True)


def _uniform(low, high, u):
    return low + (high - low) * u


#: The three kernels of a sample, in the order of their rows in a draw.
STAGES = ('kernel1', 'kernel2', 'sinc_kernel')
_DRAWS = 8  # uniform numbers per sample and kernel: size, kind, omega, sig_x, sig_y, theta, beta branch, beta


def _split_rows(rows):
    """{key: (3, b) tensor} -> {stage: {key: (b,) tensor}}."""
    rows = {key: value.unbind(0) for key, value in rows.items()}
    return {name: {key: value[i] for key, value in rows.items()} for i, name in enumerate(STAGES)}


def _kind_table(codes, probs, width):
    """(cdf, codes) padded to ``width`` for drawing a kind code with one uniform number. From the
    last kind with a positive probability on, the bound is infinite: rounding in the sums can
    then neither select a kind of probability 0 nor run past the table."""
    last = max(i for i, p in enumerate(probs) if p > 0)
    cdf = list(itertools.accumulate(probs))[:last] + [math.inf] * (width - last)
    return cdf, tuple(codes) + (codes[-1], ) * (width - len(codes))


class KernelSynthesizer:
    """Draws Real-ESRGAN's three per-sample kernels for a whole batch, on any device.

    Args:
        opt (dict): the dataset options. Keys read (as in Real-ESRGAN's ``RealESRGANDataset``):
            ``kernel_list``, ``kernel_prob``, ``blur_sigma``, ``betag_range``, ``betap_range``,
            ``sinc_prob``; the same with suffix ``2``; ``final_sinc_prob``. ``betag_range*`` /
            ``betap_range*`` are needed only when the list names generalized / plateau kernels.
            realsr options: ``kernel_range`` (default [7, 21]: the odd sizes in between, the
            reference's hard-coded list), ``kernel_range2`` and ``final_kernel_range`` (default:
            ``kernel_range``). ``blur_kernel_size*`` are ignored, as in the reference.

    Every kernel is zero-padded to ``out_size = max(21, largest size of the three ranges)``.
    Invalid options raise ``ValueError`` naming every bad key.
    """

    def __init__(self, opt):
        problems = _Problems()
        sizes1 = _size_range(opt, 'kernel_range', problems, DEFAULT_KERNEL_RANGE)
        base = (sizes1[0], sizes1[-1]) if sizes1 else DEFAULT_KERNEL_RANGE
        sizes2 = _size_range(opt, 'kernel_range2', problems, base)
        sizes_final = _size_range(opt, 'final_kernel_range', problems, base)
        self.stage1 = _BlurStage(opt, '', sizes1, problems)
        self.stage2 = _BlurStage(opt, '2', sizes2, problems)
        self.final_sinc_prob = _probability(opt, 'final_sinc_prob', problems)
        self.final_sizes = sizes_final
        problems.raise_if_any()
        self.out_size = max((REFERENCE_KERNEL_SIZE, ) + sizes1 + sizes2 + sizes_final)
        self._cpu_tables = self._make_tables()
        self._tables = {}  # device -> the tables on it

    def __repr__(self):
        return (f'{type(self).__name__}(out_size={self.out_size}, '
                f'kernel_list={[KERNEL_TYPES[k] for k in self.stage1.kinds]}, '
                f'kernel_list2={[KERNEL_TYPES[k] for k in self.stage2.kinds]}, '
                f'final_sinc_prob={self.final_sinc_prob})')

    # -- drawing ----------------------------------------------------------------------------
    def _make_tables(self):
        """The options of the three kernels as (CPU) tensors, one row per kernel (kernel1, kernel2,
        sinc_kernel), so that the three are drawn by the same few ops:

        * ``ranges`` (10, 3, 1) float64: smallest size, number of sizes, omega's lower bound below
          size 13 and from 13 on, blur_sigma, betag_range, betap_range (low, high each);
        * ``cdf`` / ``codes`` (3, K): a kind is ``codes[searchsorted(cdf, u, right=True)]`` for one
          uniform ``u``: the sinc (``sinc_prob``), then ``kernel_list`` with ``(1 - sinc_prob) *
          kernel_prob`` for the blur kernels; the sinc (``final_sinc_prob``) or the pulse for the last.
        """
        rows, kinds = [], []
        for stage in (self.stage1, self.stage2):
            rows.append((stage.sizes[0], len(stage.sizes), math.pi / 3, math.pi / 5) + stage.blur_sigma +
                        stage.betag_range + stage.betap_range)
            kinds.append(((SINC, ) + stage.kinds,
                          (stage.sinc_prob, ) + tuple((1 - stage.sinc_prob) * p for p in stage.probs)))
        rows.append((self.final_sizes[0], len(self.final_sizes), math.pi / 3, math.pi / 3) + (1.0, ) * 6)
        kinds.append(((SINC, PULSE), (self.final_sinc_prob, 1 - self.final_sinc_prob)))
        width = max(len(codes) for codes, _ in kinds)
        cdf, codes = zip(*(_kind_table(c, p, width) for c, p in kinds))
        ranges = torch.tensor(rows, dtype=torch.float64).t().unsqueeze(-1)
        return ranges, torch.tensor(cdf, dtype=torch.float64), torch.tensor(codes, dtype=torch.int64)

    def _tables_on(self, device):
        key = str(device)
        if key not in self._tables:  # moved once per device
            self._tables[key] = tuple(t.to(device) for t in self._cpu_tables)
        return self._tables[key]

    def _draw(self, batch, generator, gdev):
        """The parameters of the three kernels as (3, b) tensors (rows: kernel1, kernel2,
        sinc_kernel), all from ONE uniform draw of shape (8, 3, b); no value is read back."""
        ranges, cdf, codes = self._tables_on(gdev)
        size_low, size_count, omega_small, omega_large, sig_lo, sig_hi, bg_lo, bg_hi, bp_lo, bp_hi = ranges.unbind(0)
        u = torch.rand(_DRAWS, 3, batch, generator=generator, device=gdev, dtype=torch.float64)
        u_size, u_kind, u_omega, u_sig_x, u_sig_y, u_theta, u_branch, u_beta = u.unbind(0)

        # the size: uniform over the odd sizes low, low + 2, ...; the kind: inverse CDF
        size = (size_low + 2 * torch.minimum(torch.floor(u_size * size_count), size_count - 1)).long()
        kind = codes.gather(1, torch.searchsorted(cdf, u_kind, right=True))
        uses, iso, generalized, _, pulse = _flags(kind)
        # the sinc's cutoff: U(pi/3, pi) below size 13, U(pi/5, pi) from 13 on (blur kernels)
        omega = _uniform(torch.where(size < 13, omega_small, omega_large), math.pi, u_omega)
        sig_x = _uniform(sig_lo, sig_hi, u_sig_x)
        sig_y = torch.where(iso, sig_x, _uniform(sig_lo, sig_hi, u_sig_y))
        theta = torch.where(iso, 0.0, _uniform(-math.pi, math.pi, u_theta))
        # beta: U(low, 1) or U(1, high) with probability 1/2 each, over the kind's own range
        low, high = torch.where(generalized, bg_lo, bp_lo), torch.where(generalized, bg_hi, bp_hi)
        beta = torch.where(u_branch < 0.5, _uniform(low, 1.0, u_beta), _uniform(1.0, high, u_beta))

        values = torch.where(uses, torch.stack((sig_x, sig_y, theta, beta, omega), dim=-1), math.nan)
        size = torch.where(pulse, 1, size)  # a pulse is a 1x1 kernel
        return dict(kind=kind, size=size, **dict(zip(_PARAM_NAMES, values.unbind(-1))))

    def sample_params(self, batch, generator=None, device=None):
        """Draw the parameters of the three kernels of ``batch`` samples.

        Every random choice is drawn with ``generator`` on the generator's device (the default
        generator of ``device`` when ``generator`` is None), all in one ``torch.rand`` call of
        shape (8, 3, batch), so a seeded generator and a batch size fix the result; nothing is read
        back to the host.

        Returns:
            dict: ``kernel1`` / ``kernel2`` / ``sinc_kernel`` -> dict of (b,) tensors on ``device``:
            ``kind`` (int64 code, see :data:`KERNEL_TYPES`), ``size`` (int64; 1 for the pulse),
            ``sig_x``, ``sig_y``, ``theta``, ``beta``, ``omega`` (float64; NaN where the kind does
            not use the parameter; isotropic kinds report ``sig_y = sig_x`` and ``theta = 0``).
        """
        return _split_rows(self._draw_to(batch, generator, device))

    def _draw_to(self, batch, generator, device):
        """:meth:`_draw` on the generator's device, moved to ``device``."""
        if generator is not None:
            gdev = generator.device
        else:
            gdev = torch.device(device) if device is not None else torch.device('cpu')
        device = torch.device(device) if device is not None else gdev
        return {key: value.to(device) for key, value in self._draw(batch, generator, gdev).items()}

    def build(self, params, dtype=torch.float32):
        """Kernels (b, out_size, out_size) for each entry of :meth:`sample_params`'s result, all
        built by one :func:`build_kernels` call."""
        names = list(params)
        if not names:
            return {}
        if len(names) == 1:
            joined = params[names[0]]
        else:
            joined = {key: torch.cat([params[name][key] for name in names]) for key in params[names[0]]}
        kernels = build_kernels(**joined, out_size=self.out_size, dtype=dtype, check=False)
        return dict(zip(names, kernels.split([params[name]['kind'].numel() for name in names])))

    def sample(self, batch, generator=None, device=None, dtype=torch.float32, return_params=False):
        """Draw ``kernel1``, ``kernel2`` and ``sinc_kernel`` for ``batch`` samples.

        Args:
            batch (int): number of samples.
            generator (torch.Generator | None): source of randomness; draws happen on its device.
            device: where the kernels are built and returned (default: the generator's device).
            dtype: dtype of the kernels (float32, like the reference's FloatTensors).
            return_params (bool): also return the drawn parameters (see :meth:`sample_params`).

        Returns:
            dict of (b, out_size, out_size) tensors, or ``(kernels, params)`` with return_params.
        """
        rows = self._draw_to(batch, generator, device)
        # the three kernels of every sample in one build_kernels call, as build() does
        kernels = build_kernels(**{key: value.reshape(-1) for key, value in rows.items()}, out_size=self.out_size,
                                dtype=dtype, check=False)
        kernels = dict(zip(STAGES, kernels.view(len(STAGES), batch, self.out_size, self.out_size).unbind(0)))
        return (kernels, _split_rows(rows)) if return_params else kernels
