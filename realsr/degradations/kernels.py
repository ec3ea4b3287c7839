"""Blur kernels of Real-ESRGAN's degradation model (numpy, float64), with BasicSR's names.

Conventions (those of BasicSR, so that kernels match its oracle values):

* the sampling grid of a ``k x k`` kernel has integer offsets ``-(k-1)/2 .. (k-1)/2``; ``grid[..., 0]``
  is the column offset ``x`` and ``grid[..., 1]`` the row offset ``y``;
* the covariance is ``R(theta) diag(sig_x^2, sig_y^2) R(theta)^T``; isotropic kernels use
  ``diag(sig_x^2, sig_x^2)`` and ignore ``sig_y``/``theta``;
* with ``d = p^T Sigma^-1 p``: Gaussian ``exp(-d/2)``, generalised Gaussian ``exp(-d^beta / 2)``,
  plateau ``1 / (1 + d^beta)``; every kernel is normalised to sum 1;
* ``circular_lowpass_kernel`` is the 2-D jinc ``w J1(w r) / (2 pi r)`` with the centre tap set to its
  limit ``w^2 / (4 pi)``.

The random samplers draw from Python's ``random`` (kernel size, kernel type) and numpy's global
``np.random`` (everything continuous) in the reference order, so a seeded run reproduces the reference
dataset's kernels. Each also accepts a keyword-only ``rng`` (see :func:`sample_reference_kernels`).
Invalid arguments raise ``ValueError`` (the reference asserts) with a message naming the values.
"""
import math
import random as _pyrandom

import numpy as np
from scipy import special

from realsr import option_defs as defs

__all__ = [
    'KERNEL_TYPES', 'mesh_grid', 'sigma_matrix2', 'pdf2', 'bivariate_Gaussian', 'bivariate_generalized_Gaussian',
    'bivariate_plateau', 'random_bivariate_Gaussian', 'random_bivariate_generalized_Gaussian',
    'random_bivariate_plateau', 'random_mixed_kernels', 'circular_lowpass_kernel', 'sample_reference_kernels',
    'pulse_kernel'
]

KERNEL_TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso')

# Real-ESRGAN's hard-coded kernel sizes (kernel_range's default) and the size every kernel is zero-padded to.
DEFAULT_KERNEL_RANGE = tuple(defs.default(defs.DEGRADATION_DATASET, 'kernel_range'))
PADDED_SIZE = 21


# ---------------------------------------------------------------------------------------------
# random sources
# ---------------------------------------------------------------------------------------------
class _Draws:
    """The three kinds of draws the samplers need, bound to one random source.

    ``None``: Python's global ``random`` (discrete choices) and numpy's global ``np.random``
    (uniforms): exactly the reference's streams. An ``int``: a private ``random.Random(seed)`` and
    ``np.random.RandomState(seed)`` pair, drawn in the reference order. A ``np.random.Generator``:
    every draw from that generator.
    """

    def __init__(self, rng=None):
        if isinstance(rng, _Draws):
            self.__dict__.update(rng.__dict__)
            return
        self._gen = None
        if rng is None:
            self._py, self._np = _pyrandom, np.random
        elif isinstance(rng, np.random.Generator):
            self._gen = rng
        elif isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            self._py, self._np = _pyrandom.Random(int(rng)), np.random.RandomState(int(rng))
        else:
            raise TypeError(f'rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}')

    def uniform(self, low=0.0, high=1.0, size=None):
        if self._gen is not None:
            return self._gen.uniform(low, high, size)
        return self._np.uniform(low, high, size)

    def choice(self, seq):
        if self._gen is not None:
            return seq[int(self._gen.integers(len(seq)))]
        return self._py.choice(seq)

    def choices(self, seq, weights):
        if self._gen is not None:
            p = np.asarray(weights, dtype=np.float64)
            return seq[int(self._gen.choice(len(seq), p=p / p.sum()))]
        return self._py.choices(seq, weights)[0]


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------
def _check_odd_size(kernel_size, what='kernel_size'):
    if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size < 1:
        raise ValueError(f'{what} must be a positive odd integer, got {kernel_size!r}')
    if kernel_size % 2 != 1:
        raise ValueError(f'{what} must be odd, got {kernel_size}')
    return int(kernel_size)


def _check_range(value, name):
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be a (low, high) pair, got {value!r}') from None
    if not low < high:
        raise ValueError(f'{name} must satisfy low < high, got {list(value)!r}')
    return low, high


def _check_kernel_list(kernel_list, kernel_prob):
    kernel_list = list(kernel_list)
    kernel_prob = list(kernel_prob)
    unknown = [k for k in kernel_list if k not in KERNEL_TYPES]
    if unknown:
        raise ValueError(f'unknown kernel type(s) {unknown} in kernel_list; valid types are {list(KERNEL_TYPES)}')
    if not kernel_list:
        raise ValueError('kernel_list is empty; valid types are ' + str(list(KERNEL_TYPES)))
    if len(kernel_prob) != len(kernel_list):
        raise ValueError(f'kernel_prob has {len(kernel_prob)} entries but kernel_list has {len(kernel_list)}: '
                         f'kernel_list={kernel_list}, kernel_prob={kernel_prob}')
    if any(p < 0 for p in kernel_prob):
        raise ValueError(f'kernel_prob must be non-negative, got {kernel_prob}')
    total = float(sum(kernel_prob))
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f'kernel_prob must sum to 1, got {kernel_prob} (sum {total:.6g}) for kernel_list '
                         f'{kernel_list}')
    return kernel_list, kernel_prob


# ---------------------------------------------------------------------------------------------
# deterministic kernels
# ---------------------------------------------------------------------------------------------
def mesh_grid(kernel_size):
    """Offsets of a ``kernel_size`` x ``kernel_size`` kernel from its centre.

    Returns ``(xy, xx, yy)``: ``xy`` (k, k, 2) float64 with ``xy[..., 0] = xx`` (column offset) and
    ``xy[..., 1] = yy`` (row offset); ``xx``/``yy`` are the (k, k) meshgrid arrays.
    """
    half = kernel_size // 2
    ax = np.arange(-half, kernel_size - half, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    xy = np.stack((xx, yy), axis=-1)
    return xy, xx, yy


def sigma_matrix2(sig_x, sig_y, theta):
    """2x2 covariance ``R diag(sig_x^2, sig_y^2) R^T`` with ``R`` the rotation by ``theta``."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    diag = np.diag([sig_x**2, sig_y**2])
    return rot @ diag @ rot.T


def _quad_form(sigma_matrix, grid):
    """``p^T Sigma^-1 p`` at every grid point."""
    inv = np.linalg.inv(sigma_matrix)
    return np.sum((grid @ inv) * grid, axis=-1)


def pdf2(sigma_matrix, grid):
    """Unnormalised bivariate Gaussian ``exp(-p^T Sigma^-1 p / 2)`` on ``grid`` (k, k, 2)."""
    return np.exp(-0.5 * _quad_form(sigma_matrix, grid))


def _covariance(sig_x, sig_y, theta, isotropic):
    if isotropic:
        return np.diag([sig_x**2, sig_x**2])
    return sigma_matrix2(sig_x, sig_y, theta)


def _grid_for(kernel_size, grid):
    if grid is None:
        grid, _, _ = mesh_grid(kernel_size)
    return grid


def bivariate_Gaussian(kernel_size, sig_x, sig_y, theta, grid=None, isotropic=True):
    """Normalised bivariate Gaussian kernel (float64, ``kernel_size`` x ``kernel_size``)."""
    grid = _grid_for(kernel_size, grid)
    kernel = pdf2(_covariance(sig_x, sig_y, theta, isotropic), grid)
    return kernel / np.sum(kernel)


def bivariate_generalized_Gaussian(kernel_size, sig_x, sig_y, theta, beta, grid=None, isotropic=True):
    """Normalised generalised Gaussian ``exp(-(p^T Sigma^-1 p)^beta / 2)`` (float64)."""
    grid = _grid_for(kernel_size, grid)
    d = _quad_form(_covariance(sig_x, sig_y, theta, isotropic), grid)
    kernel = np.exp(-0.5 * np.power(d, beta))
    return kernel / np.sum(kernel)


def bivariate_plateau(kernel_size, sig_x, sig_y, theta, beta, grid=None, isotropic=True):
    """Normalised plateau kernel ``1 / (1 + (p^T Sigma^-1 p)^beta)`` (float64)."""
    grid = _grid_for(kernel_size, grid)
    d = _quad_form(_covariance(sig_x, sig_y, theta, isotropic), grid)
    kernel = 1.0 / (np.power(d, beta) + 1.0)
    return kernel / np.sum(kernel)


def circular_lowpass_kernel(cutoff, kernel_size, pad_to=0):
    """2-D sinc (jinc) low-pass kernel with cut-off frequency ``cutoff`` (radians per pixel).

    ``K(r) = cutoff * J1(cutoff * r) / (2 pi r)`` with ``r`` the distance to the centre, the centre tap
    set to its limit ``cutoff^2 / (4 pi)``, normalised to sum 1, then zero-padded symmetrically to
    ``pad_to`` when ``pad_to > kernel_size`` (``pad_to`` False/0 means no padding).
    """
    kernel_size = _check_odd_size(kernel_size)
    centre = (kernel_size - 1) / 2
    idx = np.arange(kernel_size, dtype=np.float64) - centre
    r = np.sqrt(idx[:, None]**2 + idx[None, :]**2)
    with np.errstate(divide='ignore', invalid='ignore'):
        kernel = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    c = kernel_size // 2
    kernel[c, c] = cutoff**2 / (4 * np.pi)
    kernel = kernel / np.sum(kernel)
    if pad_to and pad_to > kernel_size:
        pad = (pad_to - kernel_size) // 2
        kernel = np.pad(kernel, ((pad, pad), (pad, pad)))
    return kernel


def pulse_kernel(size=PADDED_SIZE):
    """The identity filter: a ``size`` x ``size`` float32 array with 1 at the centre."""
    kernel = np.zeros((size, size), dtype=np.float32)
    kernel[size // 2, size // 2] = 1
    return kernel


# ---------------------------------------------------------------------------------------------
# random kernels
# ---------------------------------------------------------------------------------------------
def _draw_shape(draws, sigma_x_range, sigma_y_range, rotation_range, isotropic):
    sx_lo, sx_hi = _check_range(sigma_x_range, 'sigma_x_range')
    if isotropic:
        sigma_x = draws.uniform(sx_lo, sx_hi)
        return sigma_x, sigma_x, 0.0
    sy_lo, sy_hi = _check_range(sigma_y_range, 'sigma_y_range')
    rot_lo, rot_hi = _check_range(rotation_range, 'rotation_range')
    sigma_x = draws.uniform(sx_lo, sx_hi)
    sigma_y = draws.uniform(sy_lo, sy_hi)
    rotation = draws.uniform(rot_lo, rot_hi)
    return sigma_x, sigma_y, rotation


def _draw_beta(draws, beta_range):
    # Half of the draws below 1, half above (BasicSR assumes beta_range[0] < 1 < beta_range[1]).
    if draws.uniform() < 0.5:
        return draws.uniform(beta_range[0], 1)
    return draws.uniform(1, beta_range[1])


def _apply_kernel_noise(draws, kernel, noise_range):
    if noise_range is None:
        return kernel
    lo, hi = _check_range(noise_range, 'noise_range')
    kernel = kernel * draws.uniform(lo, hi, size=kernel.shape)
    return kernel / np.sum(kernel)


def random_bivariate_Gaussian(kernel_size, sigma_x_range, sigma_y_range, rotation_range, noise_range=None,
                              isotropic=True, *, rng=None):
    """A Gaussian kernel with ``sig_x ~ U(sigma_x_range)`` (and, if anisotropic, ``sig_y``, ``theta``)."""
    kernel_size = _check_odd_size(kernel_size)
    draws = _Draws(rng)
    sigma_x, sigma_y, rotation = _draw_shape(draws, sigma_x_range, sigma_y_range, rotation_range, isotropic)
    kernel = bivariate_Gaussian(kernel_size, sigma_x, sigma_y, rotation, isotropic=isotropic)
    return _apply_kernel_noise(draws, kernel, noise_range)


def random_bivariate_generalized_Gaussian(kernel_size, sigma_x_range, sigma_y_range, rotation_range, beta_range,
                                          noise_range=None, isotropic=True, *, rng=None):
    """A generalised Gaussian kernel; ``beta ~ U(beta_range[0], 1)`` or ``U(1, beta_range[1])`` (p=0.5)."""
    kernel_size = _check_odd_size(kernel_size)
    draws = _Draws(rng)
    sigma_x, sigma_y, rotation = _draw_shape(draws, sigma_x_range, sigma_y_range, rotation_range, isotropic)
    beta = _draw_beta(draws, beta_range)
    kernel = bivariate_generalized_Gaussian(kernel_size, sigma_x, sigma_y, rotation, beta, isotropic=isotropic)
    return _apply_kernel_noise(draws, kernel, noise_range)


def random_bivariate_plateau(kernel_size, sigma_x_range, sigma_y_range, rotation_range, beta_range,
                             noise_range=None, isotropic=True, *, rng=None):
    """A plateau kernel; ``beta`` drawn as for the generalised Gaussian."""
    kernel_size = _check_odd_size(kernel_size)
    draws = _Draws(rng)
    sigma_x, sigma_y, rotation = _draw_shape(draws, sigma_x_range, sigma_y_range, rotation_range, isotropic)
    beta = _draw_beta(draws, beta_range)
    kernel = bivariate_plateau(kernel_size, sigma_x, sigma_y, rotation, beta, isotropic=isotropic)
    return _apply_kernel_noise(draws, kernel, noise_range)


def random_mixed_kernels(kernel_list,
                         kernel_prob,
                         kernel_size=21,
                         sigma_x_range=(0.6, 5),
                         sigma_y_range=(0.6, 5),
                         rotation_range=(-math.pi, math.pi),
                         betag_range=(0.5, 8),
                         betap_range=(0.5, 8),
                         noise_range=None,
                         *,
                         rng=None):
    """Pick a kernel type from ``kernel_list`` with probabilities ``kernel_prob`` and draw one kernel.

    Types: ``iso``, ``aniso``, ``generalized_iso``, ``generalized_aniso``, ``plateau_iso``,
    ``plateau_aniso``. ``noise_range`` applies to the Gaussian types only (as in the reference).
    """
    kernel_list, kernel_prob = _check_kernel_list(kernel_list, kernel_prob)
    kernel_size = _check_odd_size(kernel_size)
    draws = _Draws(rng)
    kernel_type = draws.choices(kernel_list, kernel_prob)
    isotropic = kernel_type.endswith('iso') and not kernel_type.endswith('aniso')
    common = dict(kernel_size=kernel_size, sigma_x_range=sigma_x_range, sigma_y_range=sigma_y_range,
                  rotation_range=rotation_range, isotropic=isotropic, rng=draws)
    if kernel_type in ('iso', 'aniso'):
        return random_bivariate_Gaussian(noise_range=noise_range, **common)
    if kernel_type.startswith('generalized'):
        return random_bivariate_generalized_Gaussian(beta_range=betag_range, noise_range=noise_range, **common)
    return random_bivariate_plateau(beta_range=betap_range, noise_range=None, **common)


# ---------------------------------------------------------------------------------------------
# Real-ESRGAN's per-sample kernels
# ---------------------------------------------------------------------------------------------
_REQUIRED_CFG_KEYS = ('kernel_list', 'kernel_prob', 'blur_sigma', 'betag_range', 'betap_range', 'sinc_prob',
                      'kernel_list2', 'kernel_prob2', 'blur_sigma2', 'betag_range2', 'betap_range2', 'sinc_prob2',
                      'final_sinc_prob')


def kernel_sizes(kernel_range=DEFAULT_KERNEL_RANGE):
    """The odd sizes ``kernel_range[0] .. kernel_range[1]`` (inclusive); default 7, 9, ..., 21."""
    try:
        lo, hi = kernel_range
    except (TypeError, ValueError):
        raise ValueError(f'kernel_range must be a (min, max) pair of odd sizes, got {kernel_range!r}') from None
    lo = _check_odd_size(lo, 'kernel_range[0]')
    hi = _check_odd_size(hi, 'kernel_range[1]')
    if lo > hi:
        raise ValueError(f'kernel_range must satisfy min <= max, got {list(kernel_range)}')
    if hi > PADDED_SIZE:
        raise ValueError(f'kernel_range max must be <= {PADDED_SIZE} (kernels are zero-padded to '
                         f'{PADDED_SIZE}x{PADDED_SIZE}), got {hi}')
    return list(range(lo, hi + 1, 2))


def _pad_to(kernel, size=PADDED_SIZE):
    pad = (size - kernel.shape[0]) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


def _first_or_second_kernel(cfg, suffix, sizes, draws):
    kernel_size = draws.choice(sizes)
    if draws.uniform() < cfg['sinc_prob' + suffix]:
        # smaller kernels get a higher minimum cut-off, so they stay a proper low-pass
        omega_c = draws.uniform(np.pi / 3, np.pi) if kernel_size < 13 else draws.uniform(np.pi / 5, np.pi)
        kernel = circular_lowpass_kernel(omega_c, kernel_size, pad_to=False)
    else:
        sigma = cfg['blur_sigma' + suffix]
        kernel = random_mixed_kernels(cfg['kernel_list' + suffix], cfg['kernel_prob' + suffix], kernel_size,
                                      sigma, sigma, [-math.pi, math.pi], cfg['betag_range' + suffix],
                                      cfg['betap_range' + suffix], noise_range=None, rng=draws)
    return _pad_to(kernel).astype(np.float32)


def sample_reference_kernels(cfg, rng=None):
    """Draw one sample's ``(kernel1, kernel2, sinc_kernel)`` as Real-ESRGAN's dataset does.

    ``cfg`` holds the dataset keys ``kernel_list``, ``kernel_prob``, ``blur_sigma``, ``betag_range``,
    ``betap_range``, ``sinc_prob``, the same six with suffix ``2``, ``final_sinc_prob``, and optionally
    ``kernel_range`` (default ``[7, 21]``). Each kernel is a float32 21x21 numpy array:

    1. kernel1: size ~ choice(7, 9, ..., 21); with probability ``sinc_prob`` a jinc with
       ``omega ~ U(pi/3, pi)`` (size < 13) or ``U(pi/5, pi)``, otherwise ``random_mixed_kernels``
       with ``blur_sigma`` for both axes and rotation in [-pi, pi]; zero-padded to 21;
    2. kernel2: the same with the suffix-2 keys;
    3. sinc_kernel: with probability ``final_sinc_prob`` a jinc of a random size with
       ``omega ~ U(pi/3, pi)`` padded to 21, otherwise the pulse (identity) kernel.

    ``rng``: ``None`` draws from the global ``random``/``np.random`` exactly like the reference (so
    seeding both reproduces it); an ``int`` uses a private ``random.Random``/``RandomState`` pair with
    that seed (same draw order); a ``numpy.random.Generator`` is used for every draw.
    """
    missing = [k for k in _REQUIRED_CFG_KEYS if k not in cfg]
    if missing:
        raise KeyError(f'sample_reference_kernels: cfg lacks the key(s) {missing}')
    sizes = kernel_sizes(defs.value(cfg, defs.DEGRADATION_DATASET, 'kernel_range'))
    draws = _Draws(rng)
    kernel1 = _first_or_second_kernel(cfg, '', sizes, draws)
    kernel2 = _first_or_second_kernel(cfg, '2', sizes, draws)
    if draws.uniform() < cfg['final_sinc_prob']:
        kernel_size = draws.choice(sizes)
        omega_c = draws.uniform(np.pi / 3, np.pi)
        sinc_kernel = circular_lowpass_kernel(omega_c, kernel_size, pad_to=PADDED_SIZE).astype(np.float32)
    else:
        sinc_kernel = pulse_kernel(PADDED_SIZE)
    return kernel1, kernel2, sinc_kernel
