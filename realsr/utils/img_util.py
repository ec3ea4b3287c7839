"""Image <-> tensor conversion and image file input/output (BasicSR-compatible signatures).

Conventions (the same as BasicSR, so option files and saved images interoperate):

* numpy images are HWC, BGR (OpenCV order), either uint8 in [0, 255] or float32 in [0, 1];
* tensors are CHW (or NCHW), RGB, float32 in [0, 1].
"""
import math
import os
import uuid

import cv2
import numpy as np
import torch

__all__ = ['ImageReadError', 'ImageWriteError', 'img2tensor', 'tensor2img', 'imfrombytes', 'imwrite']

_IMREAD_FLAGS = {
    'color': cv2.IMREAD_COLOR,
    'grayscale': cv2.IMREAD_GRAYSCALE,
    'unchanged': cv2.IMREAD_UNCHANGED,
}


class ImageReadError(OSError):
    """Raised when the bytes of an image file cannot be decoded (corrupt, truncated, not an image)."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class ImageWriteError(OSError):
    """Raised when an image cannot be encoded or written."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------------------------------------
# numpy <-> tensor
# ---------------------------------------------------------------------------------------------
def _one_img2tensor(img, bgr2rgb, float32):
    if not isinstance(img, np.ndarray):
        raise TypeError(f'img2tensor expects numpy arrays (HWC), got {type(img).__name__}')
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.ndim != 3:
        raise ValueError(f'img2tensor expects an HWC or HW image, got an array of shape {img.shape}')
    if bgr2rgb and img.shape[2] == 3:
        img = img[:, :, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    if float32:
        tensor = tensor.float()
    return tensor


def img2tensor(imgs, bgr2rgb=True, float32=True):
    """Convert HWC numpy image(s) to CHW tensor(s).

    Args:
        imgs (ndarray | list[ndarray]): HWC (or HW) image(s).
        bgr2rgb (bool): swap BGR to RGB for 3-channel images.
        float32 (bool): cast to float32 (values are not rescaled).

    Returns:
        Tensor | list[Tensor]: a list when a list was given, otherwise a single tensor.
    """
    if isinstance(imgs, list):
        return [_one_img2tensor(img, bgr2rgb, float32) for img in imgs]
    return _one_img2tensor(imgs, bgr2rgb, float32)


def _make_grid(tensor, padding=2, pad_value=0.0):
    """Tile an (N, C, H, W) tensor into one (C, H', W') image, ``ceil(sqrt(N))`` per row."""
    n, c, h, w = tensor.shape
    ncols = int(math.sqrt(n))
    nrows = int(math.ceil(n / ncols))
    cell_h, cell_w = h + padding, w + padding
    grid = tensor.new_full((c, nrows * cell_h + padding, ncols * cell_w + padding), pad_value)
    for k in range(n):
        r, col = divmod(k, ncols)
        top, left = r * cell_h + padding, col * cell_w + padding
        grid[:, top:top + h, left:left + w] = tensor[k]
    return grid


def _one_tensor2img(tensor, rgb2bgr, out_type, min_max):
    if not torch.is_tensor(tensor):
        raise TypeError(f'tensor2img expects tensors, got {type(tensor).__name__}')
    lo, hi = float(min_max[0]), float(min_max[1])
    t = tensor.squeeze(0).detach().float().cpu().clamp(lo, hi)
    t = (t - lo) / (hi - lo)
    if t.dim() == 4:
        # A batch of several images: tile them into a grid (the order of the batch is kept).
        t = _make_grid(t)
    if t.dim() == 3:
        img = t.numpy().transpose(1, 2, 0)
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif rgb2bgr and img.shape[2] == 3:
            img = img[:, :, ::-1]
    elif t.dim() == 2:
        img = t.numpy()
    else:
        raise ValueError(f'tensor2img supports 4-D, 3-D and 2-D tensors, got shape {tuple(tensor.shape)}')
    if out_type == np.uint8:
        # Round, as MATLAB does, instead of truncating.
        img = (img * 255.0).round()
    return np.ascontiguousarray(img.astype(out_type))


def tensor2img(tensor, rgb2bgr=True, out_type=np.uint8, min_max=(0, 1)):
    """Convert tensor(s) to HWC numpy image(s).

    Accepts (1, C, H, W), (N, C, H, W) (tiled into a grid), (C, H, W) and (H, W) tensors. Values are
    clamped to ``min_max`` and mapped to [0, 1]; RGB becomes BGR; a one-channel result is 2-D.
    With ``out_type=np.uint8`` the result is ``round(x * 255)``; a float ``out_type`` keeps [0, 1].

    Returns:
        ndarray | list[ndarray]: a list when a list of several tensors was given, otherwise a single
        image (BasicSR's convention: ``tensor2img([t])`` is one image).
    """
    if isinstance(tensor, list):
        images = [_one_tensor2img(t, rgb2bgr, out_type, min_max) for t in tensor]
        return images[0] if len(images) == 1 else images  # BasicSR's convention
    if not torch.is_tensor(tensor):
        raise TypeError(f'tensor2img expects a tensor or a list of tensors, got {type(tensor).__name__}')
    return _one_tensor2img(tensor, rgb2bgr, out_type, min_max)


# ---------------------------------------------------------------------------------------------
# file input/output
# ---------------------------------------------------------------------------------------------
def imfrombytes(content, flag='color', float32=False, path=None):
    """Decode an image from the bytes of an encoded file.

    Args:
        content (bytes): the encoded file (png, jpg, ...).
        flag (str): 'color' (3-channel BGR uint8; grayscale files get 3 equal channels and
            16-bit files are reduced to 8 bits, exactly like ``cv2.imread(.., IMREAD_COLOR)``),
            'grayscale' or 'unchanged'.
        float32 (bool): return float32 divided by 255.
        path (str, optional): where the bytes came from, used in error messages.

    Raises:
        ImageReadError: the bytes are empty or cannot be decoded.
    """
    if flag not in _IMREAD_FLAGS:
        raise ValueError(f"imfrombytes: unknown flag {flag!r}; use one of {', '.join(_IMREAD_FLAGS)}")
    where = f"'{path}'" if path is not None else '(bytes given without a path)'
    advice = ('Check the file (open it in an image viewer, or re-create/re-download it) and replace or remove '
              'it from the dataset; a training dataset can also skip such files with a warning when its '
              'options set `skip_bad_images: true`.')
    if content is None or len(content) == 0:
        raise ImageReadError(f'Cannot read image {where}: the file is empty. {advice}', path)
    buf = np.frombuffer(content, np.uint8)
    try:
        img = cv2.imdecode(buf, _IMREAD_FLAGS[flag])
    except cv2.error as err:
        raise ImageReadError(f'Cannot decode image {where} ({len(content)} bytes): {err}. {advice}', path) from None
    if img is None:
        raise ImageReadError(
            f'Cannot decode image {where} ({len(content)} bytes): the file is corrupt, truncated or not an '
            f'image format OpenCV can read. {advice}', path)
    if float32:
        img = img.astype(np.float32) / 255.0
    return img


def imwrite(img, file_path, params=None, auto_mkdir=True):
    """Write an image file atomically (encode, write a temporary file beside it, then rename).

    A reader never sees a half-written file, and an interrupted write leaves the old file intact.

    Args:
        img (ndarray): the image (BGR for colour images), as ``cv2.imwrite`` takes it.
        file_path (str | PathLike): the destination; its extension selects the format.
        params (list, optional): ``cv2.imwrite`` parameters, e.g. ``[cv2.IMWRITE_PNG_COMPRESSION, 3]``.
        auto_mkdir (bool): create the parent folder if needed.

    Raises:
        ImageWriteError: the image cannot be encoded in that format, or the file cannot be written.
    """
    file_path = os.fspath(file_path)
    dir_name = os.path.dirname(os.path.abspath(file_path))
    if auto_mkdir:
        os.makedirs(dir_name, exist_ok=True)
    ext = os.path.splitext(file_path)[1]
    if not ext:
        raise ImageWriteError(f"Cannot write image '{file_path}': the file name has no extension (e.g. .png) "
                              'to choose the format from.', file_path)
    try:
        ok, encoded = cv2.imencode(ext, img, params if params is not None else [])
    except cv2.error as err:
        ok, encoded = False, err
    if not ok:
        shape = getattr(img, 'shape', None)
        dtype = getattr(img, 'dtype', None)
        detail = f': {encoded}' if isinstance(encoded, Exception) else ''
        raise ImageWriteError(f"Cannot write image '{file_path}': OpenCV could not encode an array of shape "
                              f"{shape} and dtype {dtype} as '{ext}'{detail}", file_path)
    tmp_path = os.path.join(dir_name, f'.{os.path.basename(file_path)}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        # os.open honours the umask, so the file gets the same permissions cv2.imwrite would give it.
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
        with os.fdopen(fd, 'wb') as f:
            f.write(encoded.tobytes())
        os.replace(tmp_path, file_path)
    except OSError as err:
        try:
            os.remove(tmp_path)
        except OSError:
            pass
        raise ImageWriteError(f"Cannot write image '{file_path}': {err}", file_path) from err
    return True
