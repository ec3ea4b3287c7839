"""Gaussian and Poisson noise (torch, batched) and numpy/OpenCV noise and JPEG helpers.

Torch functions (``*_pt``) take RGB (b, c, h, w) tensors in [0, 1]; ``sigma``/``scale`` are in
0..255 units (Gaussian) or a multiplier (Poisson), either a number or a (b,) tensor, and
``gray_noise`` is a number or a (b,) 0/1 tensor. They draw in BasicSR's order, so with
``generator=None`` (the global RNG) and ``torch.manual_seed`` they reproduce BasicSR bit-exactly on
CPU:

* Gaussian: ``randn(h, w)`` (the gray field), then ``randn(b, c, h, w)``;
  random variants first draw ``rand(b)`` (sigma) and ``rand(b)`` (gray flag).
* Poisson: ``poisson`` on the gray image (b, 1, h, w), then on the colour image (b, c, h, w);
  random variants first draw ``rand(b)`` (scale) and ``rand(b)`` (gray).

The gray field is drawn when ``gray_noise`` is a (b,) tensor, whatever its values, or a number
> 0. BasicSR draws it only when some flag is set, which it tests on the host: so with per-sample
flags that are all 0 the streams differ (the noise itself is the same function of the draws);
with at least one gray sample, or a number, they are the same.

Semantics kept from the reference:

* gray Gaussian noise is ONE (h, w) field shared by the whole batch, scaled by each sample's sigma;
* Poisson noise is computed on the image quantised to 1/255 steps with ``vals = 2^ceil(log2(n))``
  intensity levels (``n`` = distinct quantised values of that sample over all channels) and added
  to the unquantised image; the gray version uses ``0.2989 R + 0.587 G + 0.114 B``.

Differences: a number ``sigma`` combined with a gray tensor works for any batch (BasicSR raises for
b > 1); ``n`` is counted for the whole batch at once (no per-sample loop) and, like ``vals``, stays
on the device; nothing here reads a device value back to the host (no sync on a GPU); every random
function takes a keyword-only ``generator``; the random ``add`` functions can also return the drawn
values (``return_params=True``).

The numpy functions use BasicSR's names and argument order (note: ``add_gaussian_noise(img, sigma,
clip, rounds, gray_noise)`` differs from the torch order) and work on HWC BGR float32 images;
they draw from ``np.random`` unless ``rng`` (a ``np.random.Generator`` or ``RandomState``) is given.
"""
import numpy as np
import torch

__all__ = [
    'generate_gaussian_noise_pt', 'add_gaussian_noise_pt', 'random_generate_gaussian_noise_pt',
    'random_add_gaussian_noise_pt', 'generate_poisson_noise_pt', 'add_poisson_noise_pt',
    'random_generate_poisson_noise_pt', 'random_add_poisson_noise_pt', 'count_unique_levels_pt',
    'rgb_to_gray_pt', 'generate_gaussian_noise', 'add_gaussian_noise', 'random_generate_gaussian_noise',
    'random_add_gaussian_noise', 'generate_poisson_noise', 'add_poisson_noise', 'random_generate_poisson_noise',
    'random_add_poisson_noise', 'add_jpg_compression', 'random_add_jpg_compression'
]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finish(out, clip, rounds):
    """BasicSR's clip/rounds post-processing (0..1 range, 1/255 steps)."""
    if clip and rounds:
        return torch.clamp((out * 255.0).round(), 0, 255) / 255.
    if clip:
        return torch.clamp(out, 0, 1)
    if rounds:
        return (out * 255.0).round() / 255.
    return out


def _per_sample(value, b, name):
    """A number stays a number; a tensor becomes (b, 1, 1, 1) (a 0-d tensor is broadcast)."""
    if _is_number(value):
        return value
    value = torch.as_tensor(value)
    if value.numel() == 1:
        return value.reshape(1, 1, 1, 1).expand(b, 1, 1, 1)
    if value.numel() != b:
        raise ValueError(f'{name} must be a number or hold one value per sample ({b}), got shape '
                         f'{tuple(value.shape)}')
    return value.reshape(b, 1, 1, 1)


def _gray_flags(gray_noise, b, img):
    """(flags or number, whether the gray noise is computed). Per-sample flags always compute it
    and blend with the 0/1 flags: testing whether any is set would read them back (a device sync)."""
    if _is_number(gray_noise):
        return gray_noise, gray_noise > 0
    return _per_sample(gray_noise, b, 'gray_noise').to(device=img.device, dtype=img.dtype), True


def _check_img(img, what):
    if not torch.is_tensor(img) or img.dim() != 4:
        raise ValueError(f'{what} expects a (b, c, h, w) tensor, got '
                         f'{tuple(img.shape) if torch.is_tensor(img) else type(img).__name__}')


def _draw_params(img, value_range, gray_prob, generator, name):
    """Per-sample ``U(value_range)`` and gray flags, with BasicSR's two ``rand(b)`` draws."""
    lo, hi = value_range
    if lo > hi:
        raise ValueError(f'{name} must satisfy low <= high, got {list(value_range)}')
    b = img.size(0)
    values = torch.rand(b, generator=generator, dtype=img.dtype, device=img.device) * (hi - lo) + lo
    gray = (torch.rand(b, generator=generator, dtype=img.dtype, device=img.device) < gray_prob).to(img.dtype)
    return values, gray


# ---------------------------------------------------------------------------------------------
# Gaussian (torch)
# ---------------------------------------------------------------------------------------------
def generate_gaussian_noise_pt(img, sigma=10, gray_noise=0, *, generator=None):
    """Gaussian noise shaped like ``img`` (b, c, h, w); ``sigma`` in 0..255 units (number or (b,))."""
    _check_img(img, 'generate_gaussian_noise_pt')
    b, _, h, w = img.shape
    if not _is_number(sigma):
        sigma = _per_sample(sigma, b, 'sigma').to(device=img.device, dtype=img.dtype)
    gray_noise, with_gray = _gray_flags(gray_noise, b, img)
    if with_gray:
        field = torch.randn(h, w, generator=generator, dtype=img.dtype, device=img.device)
        noise_gray = (field * sigma / 255.).expand(b, 1, h, w)
    noise = torch.randn(img.shape, generator=generator, dtype=img.dtype, device=img.device) * sigma / 255.
    if with_gray:
        noise = noise * (1 - gray_noise) + noise_gray * gray_noise
    return noise


def add_gaussian_noise_pt(img, sigma=10, gray_noise=0, clip=True, rounds=False, *, generator=None):
    """``img`` plus Gaussian noise, then BasicSR's ``clip``/``rounds`` handling."""
    noise = generate_gaussian_noise_pt(img, sigma, gray_noise, generator=generator)
    return _finish(img + noise, clip, rounds)


def random_generate_gaussian_noise_pt(img, sigma_range=(0, 10), gray_prob=0, *, generator=None,
                                      return_params=False):
    """Noise with per-sample ``sigma ~ U(sigma_range)`` and gray flag ``U < gray_prob``."""
    _check_img(img, 'random_generate_gaussian_noise_pt')
    sigma, gray = _draw_params(img, sigma_range, gray_prob, generator, 'sigma_range')
    noise = generate_gaussian_noise_pt(img, sigma, gray, generator=generator)
    return (noise, sigma, gray) if return_params else noise


def random_add_gaussian_noise_pt(img, sigma_range=(0, 1.0), gray_prob=0, clip=True, rounds=False, *,
                                 generator=None, return_params=False):
    """``img`` plus random Gaussian noise (see :func:`random_generate_gaussian_noise_pt`).

    ``return_params=True`` returns ``(out, sigma, gray)`` with the drawn (b,) values.
    """
    noise, sigma, gray = random_generate_gaussian_noise_pt(img, sigma_range, gray_prob, generator=generator,
                                                           return_params=True)
    out = _finish(img + noise, clip, rounds)
    return (out, sigma, gray) if return_params else out


# ---------------------------------------------------------------------------------------------
# Poisson (torch)
# ---------------------------------------------------------------------------------------------
def rgb_to_gray_pt(img):
    """(b, 3, h, w) -> (b, 1, h, w) luma ``0.2989 R + 0.587 G + 0.114 B`` (torchvision's weights)."""
    r, g, b = img.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(-3)


def _quantise(img):
    return torch.clamp((img * 255.0).round(), 0, 255) / 255.


def count_unique_levels_pt(img_q):
    """Number of distinct values per sample of an image quantised to 1/255 steps in [0, 1].

    Vectorised and with no device sync: each sample's 256 levels are marked in a fixed (b, 256)
    table with one ``scatter_`` (``bincount`` would read the largest index back to size its
    output) and the marks are summed. Returns a (b,) int64 tensor, on the image's device.
    """
    b = img_q.shape[0]
    levels = (img_q.reshape(b, -1) * 255.).round().long().clamp_(0, 255)
    present = torch.zeros(b, 256, dtype=torch.int32, device=img_q.device).scatter_(1, levels, 1)
    return present.sum(dim=1, dtype=torch.int64)


def _levels_to_vals(n_unique, like):
    """``2 ** ceil(log2(n))`` per sample as a (b, 1, 1, 1) tensor shaped/typed like ``like``."""
    vals = torch.exp2(torch.ceil(torch.log2(n_unique.to(torch.float64))))
    return vals.to(dtype=like.dtype).view(-1, 1, 1, 1)


def _poisson_noise(img_q, generator):
    vals = _levels_to_vals(count_unique_levels_pt(img_q), img_q)
    out = torch.poisson(img_q * vals, generator=generator) / vals
    return out - img_q


def generate_poisson_noise_pt(img, scale=1.0, gray_noise=0, *, generator=None):
    """Poisson (shot) noise shaped like ``img``, times ``scale`` (number or (b,))."""
    _check_img(img, 'generate_poisson_noise_pt')
    b, c, h, w = img.shape
    gray_noise, with_gray = _gray_flags(gray_noise, b, img)
    if with_gray:
        noise_gray = _poisson_noise(_quantise(rgb_to_gray_pt(img)), generator).expand(b, c, h, w)
    noise = _poisson_noise(_quantise(img), generator)
    if with_gray:
        noise = noise * (1 - gray_noise) + noise_gray * gray_noise
    if not _is_number(scale):
        scale = _per_sample(scale, b, 'scale').to(device=img.device, dtype=img.dtype)
    return noise * scale


def add_poisson_noise_pt(img, scale=1.0, gray_noise=0, clip=True, rounds=False, *, generator=None):
    """``img`` plus Poisson noise, then BasicSR's ``clip``/``rounds`` handling."""
    noise = generate_poisson_noise_pt(img, scale, gray_noise, generator=generator)
    return _finish(img + noise, clip, rounds)


def random_generate_poisson_noise_pt(img, scale_range=(0, 1.0), gray_prob=0, *, generator=None,
                                     return_params=False):
    """Poisson noise with per-sample ``scale ~ U(scale_range)`` and gray flag ``U < gray_prob``."""
    _check_img(img, 'random_generate_poisson_noise_pt')
    scale, gray = _draw_params(img, scale_range, gray_prob, generator, 'scale_range')
    noise = generate_poisson_noise_pt(img, scale, gray, generator=generator)
    return (noise, scale, gray) if return_params else noise


def random_add_poisson_noise_pt(img, scale_range=(0, 1.0), gray_prob=0, clip=True, rounds=False, *,
                                generator=None, return_params=False):
    """``img`` plus random Poisson noise; ``return_params=True`` returns ``(out, scale, gray)``."""
    noise, scale, gray = random_generate_poisson_noise_pt(img, scale_range, gray_prob, generator=generator,
                                                          return_params=True)
    out = _finish(img + noise, clip, rounds)
    return (out, scale, gray) if return_params else out


# ---------------------------------------------------------------------------------------------
# numpy versions (HWC, BGR, float32 in [0, 1])
# ---------------------------------------------------------------------------------------------
def _np_rng(rng):
    return np.random if rng is None else rng


def _finish_np(out, clip, rounds):
    if clip and rounds:
        return np.clip((out * 255.0).round(), 0, 255) / 255.
    if clip:
        return np.clip(out, 0, 1)
    if rounds:
        return (out * 255.0).round() / 255.
    return out


def generate_gaussian_noise(img, sigma=10, gray_noise=False, *, rng=None):
    """Gaussian noise (float32) shaped like the HWC ``img``; gray noise is one field for all channels."""
    rng = _np_rng(rng)
    if gray_noise:
        field = np.float32(rng.standard_normal(img.shape[0:2])) * sigma / 255.
        return np.repeat(field[:, :, None], 3, axis=2)
    return np.float32(rng.standard_normal(img.shape)) * sigma / 255.


def add_gaussian_noise(img, sigma=10, clip=True, rounds=False, gray_noise=False, *, rng=None):
    """``img`` plus Gaussian noise (note the BasicSR argument order: clip, rounds, gray_noise)."""
    return _finish_np(img + generate_gaussian_noise(img, sigma, gray_noise, rng=rng), clip, rounds)


def random_generate_gaussian_noise(img, sigma_range=(0, 10), gray_prob=0, *, rng=None):
    r = _np_rng(rng)
    sigma = r.uniform(sigma_range[0], sigma_range[1])
    gray_noise = r.uniform() < gray_prob
    return generate_gaussian_noise(img, sigma, gray_noise, rng=rng)


def random_add_gaussian_noise(img, sigma_range=(0, 1.0), gray_prob=0, clip=True, rounds=False, *, rng=None):
    return _finish_np(img + random_generate_gaussian_noise(img, sigma_range, gray_prob, rng=rng), clip, rounds)


def generate_poisson_noise(img, scale=1.0, gray_noise=False, *, rng=None):
    """Poisson noise for an HWC BGR float image (gray: ``cv2.COLOR_BGR2GRAY``, repeated to 3 channels)."""
    rng = _np_rng(rng)
    if gray_noise:
        import cv2

        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    img = np.clip((img * 255.0).round(), 0, 255) / 255.
    vals = len(np.unique(img))
    vals = 2**np.ceil(np.log2(vals))
    out = np.float32(rng.poisson(img * vals) / float(vals))
    noise = out - img
    if gray_noise:
        noise = np.repeat(noise[:, :, None], 3, axis=2)
    return noise * scale


def add_poisson_noise(img, scale=1.0, clip=True, rounds=False, gray_noise=False, *, rng=None):
    return _finish_np(img + generate_poisson_noise(img, scale, gray_noise, rng=rng), clip, rounds)


def random_generate_poisson_noise(img, scale_range=(0, 1.0), gray_prob=0, *, rng=None):
    r = _np_rng(rng)
    scale = r.uniform(scale_range[0], scale_range[1])
    gray_noise = r.uniform() < gray_prob
    return generate_poisson_noise(img, scale, gray_noise, rng=rng)


def random_add_poisson_noise(img, scale_range=(0, 1.0), gray_prob=0, clip=True, rounds=False, *, rng=None):
    return _finish_np(img + random_generate_poisson_noise(img, scale_range, gray_prob, rng=rng), clip, rounds)


def add_jpg_compression(img, quality=90):
    """OpenCV JPEG round trip of an HWC BGR float image in [0, 1]; returns float32 in [0, 1].

    The image is clipped to [0, 1] and converted to 8 bits with rounding (what ``imencode`` does to a
    float array) before encoding at integer ``quality``.
    """
    import cv2

    img8 = np.clip(np.round(np.clip(img, 0, 1) * 255.), 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode('.jpg', img8, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError(f'cv2.imencode failed for an image of shape {img.shape} at quality {quality}')
    return np.float32(cv2.imdecode(enc, cv2.IMREAD_COLOR if img8.ndim == 3 else cv2.IMREAD_GRAYSCALE)) / 255.


def random_add_jpg_compression(img, quality_range=(90, 100), *, rng=None):
    """:func:`add_jpg_compression` with ``quality ~ U(quality_range)`` cast to int for OpenCV."""
    quality = _np_rng(rng).uniform(quality_range[0], quality_range[1])
    return add_jpg_compression(img, int(quality))
