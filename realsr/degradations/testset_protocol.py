"""The dropout papers' degraded benchmark sets (Reflash / Adaptive Dropout, Simple-Align).

Eight variants of every HR image, named as the papers' folders (``jepg`` is their spelling)::

    bicubic, blur2_bicubic, bicubic_noise20, bicubic_jepg50, blur2_bicubic_noise20,
    blur2_bicubic_jepg50, bicubic_noise20_jepg50, blur2_bicubic_noise20_jepg50

Operations, always in this order (see ``shared/spec/test-protocol.md``):

* ``blur2``: OpenCV Gaussian blur of the uint8 HR, 21x21 window, sigma 2 on both axes,
  reflect-101 border; uint8 out.
* ``bicubic``: Pillow ``resize((int(w / scale), int(h / scale)), BICUBIC)`` -- Pillow's antialiased
  bicubic, not MATLAB ``imresize``. The HR is not cropped first: a side that is not a multiple of the
  scale is resized to ``int(side / scale)`` (the ratio is then not exactly the scale; BasicSR crops
  the GT to ``scale x LR`` at test time).
* ``noise20``: additive white Gaussian noise, sigma 20/255 on the [0, 1] image, drawn independently
  per pixel and per channel (one channel for a grayscale image); the sum is clipped to [0, 1],
  multiplied by 255 and **truncated** to uint8 (not rounded, as the reference does: a -0.5 DN
  bias). The reference draws unseeded noise; here every (variant, file) pair has its own generator
  derived from one recorded seed (:func:`noise_rng`), so a run is reproducible and does not depend
  on which other files or variants are made. ``legacy_noise40`` gives ``bicubic_noise20`` sigma 40
  (the folder name is kept), as the reference did before 2024-07-25 and Adaptive-Dropout still does.
* ``jepg50``: Pillow JPEG at quality 50 in memory (Pillow defaults: IJG tables, 4:2:0 chroma),
  decoded and converted to RGB -- so a grayscale HR gives a 3-channel (equal channels) result.

Grayscale (mode ``L``) HR images stay one-channel through blur, bicubic and noise, as in the
reference. Other modes are converted first (``1``/``LA``/``I``/``I;16``/``F`` -> ``L``, everything
else, e.g. ``P``/``RGBA``/``CMYK`` -> ``RGB``: the reference would fail or blur palette indices) and
the conversion is reported.

The deterministic variants are byte-identical (decoded pixels) to the reference script's output with
the Pillow/OpenCV versions recorded in ``shared/oracle/testset_protocol``.
"""
from __future__ import annotations

import hashlib
import io
import json
import zlib
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from realsr.degradations.testset_variants import VARIANTS

DETERMINISTIC_VARIANTS = tuple(v for v in VARIANTS if 'noise' not in v)
DEFAULT_SEED = 0
NOISE_SIGMA = 20
LEGACY_NOISE_SIGMA = 40
JPEG_QUALITY = 50
BLUR_KSIZE = 21
BLUR_SIGMA = 2
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.pgm', '.webp')
# output keeps the HR file name for these; any other extension is written as <stem>.png
LOSSLESS_EXTENSIONS = ('.png', '.bmp', '.tif', '.tiff', '.ppm', '.pgm')
MANIFEST_NAME = 'testset_manifest.json'
README_NAME = 'README.md'


class TestsetError(ValueError):
    """A bad input folder, file or argument for the test-set generator."""

    __test__ = False  # not a pytest test class


def parse_variant(name: str) -> dict:
    """``'blur2_bicubic_noise20'`` -> ``{'blur': True, 'noise': True, 'jpeg': False}``."""
    if name not in VARIANTS:
        raise TestsetError(f"unknown degradation variant '{name}'; choose from: {', '.join(VARIANTS)}")
    parts = name.split('_')
    return {'blur': 'blur2' in parts, 'noise': 'noise20' in parts, 'jpeg': 'jepg50' in parts}


def noise_sigma_for(variant: str, legacy_noise40: bool = False) -> Optional[int]:
    """Noise sigma (0..255 units) of a variant, None if it has no noise step."""
    if not parse_variant(variant)['noise']:
        return None
    if legacy_noise40 and variant == 'bicubic_noise20':
        return LEGACY_NOISE_SIGMA
    return NOISE_SIGMA


def pixel_sha256(img: Image.Image) -> str:
    """SHA-256 of the decoded pixels, ``np.array(img).tobytes()`` (the oracle manifest's hash)."""
    return hashlib.sha256(np.array(img).tobytes()).hexdigest()


def normalize_mode(img: Image.Image) -> tuple[Image.Image, Optional[str]]:
    """Keep ``L`` and ``RGB``; convert anything else. Returns (image, note or None)."""
    if img.mode in ('L', 'RGB'):
        return img, None
    target = 'L' if img.mode in ('1', 'LA', 'La', 'I', 'I;16', 'I;16L', 'I;16B', 'F') else 'RGB'
    if img.mode.startswith('I;16') or img.mode in ('I', 'F'):
        # Pillow's convert('L') clips high-bit-depth values; scale the range to 8 bits instead
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith('I;16') or arr.max() > 255 else 255.0
        out = Image.fromarray(np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), 'L')
    else:
        out = img.convert(target)
    return out, f'mode {img.mode} converted to {target}'


def load_hr(path) -> Image.Image:
    """Open an HR image with Pillow (fully decoded); raise :class:`TestsetError` naming the file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            img = im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise TestsetError(f"cannot read HR image '{path}': {err}") from err
    return img


def blur2(img: Image.Image) -> Image.Image:
    """21x21 Gaussian blur, sigma 2 on both axes, OpenCV default border, on the uint8 image."""
    arr = cv2.GaussianBlur(np.array(img), (BLUR_KSIZE, BLUR_KSIZE), BLUR_SIGMA)
    return Image.fromarray(arr.astype(np.uint8), img.mode)


def lr_size(size_wh: Sequence[int], scale: float = 4) -> tuple[int, int]:
    """The reference's LR size: ``(int(w / scale), int(h / scale))`` (no crop, truncation)."""
    w, h = size_wh
    return int(w / scale), int(h / scale)


def bicubic_down(img: Image.Image, scale: float = 4) -> Image.Image:
    """Pillow antialiased bicubic resize to ``(int(w / scale), int(h / scale))``."""
    w, h = lr_size(img.size, scale)
    if w < 1 or h < 1:
        raise TestsetError(f'image of size {img.size[0]}x{img.size[1]} is too small for scale {scale}')
    return img.resize((w, h), Image.BICUBIC)


def add_noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """AWGN of std ``sigma / 255`` on the [0, 1] image, per pixel and channel; clip; truncate.

    The output is ``np.clip(clip(img / 255 + n, 0, 1) * 255, 0, 255).astype(uint8)`` with
    ``n = sigma / 255 * rng.standard_normal(shape)``: truncation, not rounding, as the reference.
    """
    arr = np.asarray(img, dtype=np.float64) / 255.0
    noisy = arr + rng.standard_normal(arr.shape) * (sigma / 255.0)
    noisy = np.clip(noisy, 0.0, 1.0)
    out = np.clip(noisy * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(out, img.mode)


def jpeg_compress(img: Image.Image, quality: int = JPEG_QUALITY) -> Image.Image:
    """Pillow JPEG round trip in memory with default settings, decoded as RGB (also for gray)."""
    buf = io.BytesIO()
    img.save(buf, format='JPEG', quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert('RGB')


def noise_rng(seed: int, variant: str, file_name: str) -> np.random.Generator:
    """The generator for one (variant, file): PCG64 seeded with ``[seed, crc32(variant), crc32(name)]``.

    ``file_name`` is the HR file's base name; the CRC32s are of their UTF-8 bytes.
    """
    key = [int(seed), zlib.crc32(variant.encode('utf-8')), zlib.crc32(file_name.encode('utf-8'))]
    return np.random.default_rng(np.random.SeedSequence(key))


def degrade(img: Image.Image, variant: str, scale: float = 4, rng: Optional[np.random.Generator] = None,
            noise_sigma: float = NOISE_SIGMA) -> Image.Image:
    """Apply one variant to a PIL HR image (mode ``L`` or ``RGB``): blur -> bicubic -> noise -> JPEG."""
    ops = parse_variant(variant)
    if img.mode not in ('L', 'RGB'):
        raise TestsetError(f'degrade() needs an L or RGB image, got mode {img.mode} (see normalize_mode)')
    out = blur2(img) if ops['blur'] else img
    out = bicubic_down(out, scale)
    if ops['noise']:
        if rng is None:
            raise TestsetError(f"variant '{variant}' adds noise: pass rng (see noise_rng)")
        out = add_noise(out, noise_sigma, rng)
    if ops['jpeg']:
        out = jpeg_compress(out, JPEG_QUALITY)
    return out


def list_hr_images(hr_dir) -> list[Path]:
    hr_dir = Path(hr_dir)
    if not hr_dir.exists():
        raise TestsetError(f"HR folder '{hr_dir}' does not exist")
    if not hr_dir.is_dir():
        raise TestsetError(f"HR path '{hr_dir}' is not a folder")
    files = sorted(p for p in hr_dir.iterdir()
                   if p.is_file() and not p.name.startswith('.') and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise TestsetError(f"HR folder '{hr_dir}' has no image file ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def output_name(hr_path: Path) -> str:
    """Same file name as the HR for lossless formats; ``<stem>.png`` otherwise (never lossy output)."""
    return hr_path.name if hr_path.suffix.lower() in LOSSLESS_EXTENSIONS else hr_path.stem + '.png'


def _library_versions() -> dict:
    import PIL
    from PIL import features
    return {'pillow': PIL.__version__, 'libjpeg_turbo': features.version('libjpeg_turbo'),
            'opencv': cv2.__version__, 'numpy': np.__version__}


def make_testsets(hr_dir, out_dir, scale: float = 4, variants: Optional[Iterable[str]] = None,
                  seed: int = DEFAULT_SEED, legacy_noise40: bool = False,
                  progress: Optional[Callable[[Iterable, int], Iterable]] = None,
                  log: Optional[Callable[[str], None]] = None) -> dict:
    """Write ``out_dir/<variant>/<name>`` for every HR image and variant, plus a manifest and README.

    ``progress(iterable, total)`` may wrap the loop over files (e.g. tqdm); ``log`` receives
    warnings (size not divisible by the scale, mode conversions, renamed outputs). Returns the
    manifest dict (also written to ``out_dir/testset_manifest.json``).
    """
    variants = list(VARIANTS if variants is None else variants)
    if not variants:
        raise TestsetError('no variant selected')
    for v in variants:
        parse_variant(v)
    variants = [v for v in VARIANTS if v in set(variants)]  # canonical order, no duplicates
    if not scale > 0:
        raise TestsetError(f'scale must be positive, got {scale}')
    if float(scale).is_integer():
        scale = int(scale)
    files = list_hr_images(hr_dir)
    log = log or (lambda msg: None)
    out_dir = Path(out_dir)
    for v in variants:
        (out_dir / v).mkdir(parents=True, exist_ok=True)

    names = {}
    for path in files:
        other = names.setdefault(output_name(path), path)
        if other != path:
            raise TestsetError(f"'{other.name}' and '{path.name}' would both be written as "
                               f"'{output_name(path)}'; rename one of them")
    records = []
    iterable = progress(files, len(files)) if progress else files
    for path in iterable:
        raw = load_hr(path)
        img, note = normalize_mode(raw)
        notes = [note] if note else []
        w, h = img.size
        if w % scale or h % scale:
            lw, lh = lr_size((w, h), scale)
            notes.append(f'HR size {w}x{h} is not divisible by scale {scale}: resized to {lw}x{lh} '
                         f'(int(side/scale), as the reference; the HR is not cropped)')
        name = output_name(path)
        if name != path.name:
            notes.append(f'written as {name} (lossless PNG) instead of {path.name}')
        for n in notes:
            log(f'{path.name}: {n}')
        outputs = {}
        for v in variants:
            sigma = noise_sigma_for(v, legacy_noise40)
            rng = noise_rng(seed, v, path.name) if sigma is not None else None
            try:
                lr = degrade(img, v, scale, rng=rng, noise_sigma=sigma or NOISE_SIGMA)
            except TestsetError as err:
                raise TestsetError(f"'{path}': {err}") from err
            lr.save(out_dir / v / name)
            outputs[v] = {'mode': lr.mode, 'size_wh': list(lr.size), 'sha256_of_pixels': pixel_sha256(lr)}
        records.append({'hr': path.name, 'out': name, 'hr_mode': raw.mode, 'hr_size_wh': [w, h],
                        'notes': notes, 'outputs': outputs})

    manifest = {
        'generator': 'scripts/make_degraded_testsets.py (realsr.degradations.testset_protocol)',
        'hr_dir': str(Path(hr_dir).resolve()),
        'scale': scale,
        'variants': variants,
        'seed': int(seed),
        'legacy_noise40': bool(legacy_noise40),
        'noise_sigma': {v: noise_sigma_for(v, legacy_noise40) for v in variants
                        if noise_sigma_for(v, legacy_noise40) is not None},
        'noise_rng': 'numpy PCG64 via SeedSequence([seed, crc32(variant), crc32(hr_file_name)]); '
                     'n = sigma/255 * standard_normal(shape), per pixel and channel; '
                     'out = uint8(trunc(clip(clip(x/255 + n, 0, 1) * 255, 0, 255)))',
        'operations': 'blur2 = cv2.GaussianBlur(uint8, (21,21), 2); bicubic = PIL resize((int(w/s), int(h/s)), '
                      'BICUBIC); noise as above; jepg50 = PIL JPEG q50 in memory, convert("RGB")',
        'versions': _library_versions(),
        'files': records,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / MANIFEST_NAME, 'w') as f:
        json.dump(manifest, f, indent=1)
    _write_readme(out_dir / README_NAME, manifest)
    return manifest


def _write_readme(path: Path, manifest: dict) -> None:
    sig = ', '.join(f'{k}: {v}' for k, v in manifest['noise_sigma'].items()) or 'none'
    lines = [
        '# Degraded benchmark sets (dropout papers\' protocol)',
        '',
        f"Made from `{manifest['hr_dir']}` at scale x{manifest['scale']} by "
        '`scripts/make_degraded_testsets.py`.',
        '',
        f"- Variants: {', '.join(manifest['variants'])}",
        f"- Noise seed: **{manifest['seed']}** (re-run with `--seed {manifest['seed']}` to reproduce); "
        f"sigma (0..255): {sig}" + (' -- `--legacy-noise40`' if manifest['legacy_noise40'] else ''),
        f"- Noise generator: {manifest['noise_rng']}",
        f"- Operations (in this order): {manifest['operations']}",
        f"- Library versions: {', '.join(f'{k} {v}' for k, v in manifest['versions'].items())}",
        f"- Per-file modes, sizes and pixel SHA-256: `{MANIFEST_NAME}`",
        '',
        'The reference script draws unseeded noise, so the noise folders match it in distribution only.',
        '',
    ]
    path.write_text('\n'.join(lines))


__all__ = ['VARIANTS', 'DETERMINISTIC_VARIANTS', 'DEFAULT_SEED', 'TestsetError', 'parse_variant',
           'noise_sigma_for', 'pixel_sha256', 'normalize_mode', 'load_hr', 'blur2', 'lr_size', 'bicubic_down',
           'add_noise', 'jpeg_compress', 'noise_rng', 'degrade', 'list_hr_images', 'output_name',
           'make_testsets']
