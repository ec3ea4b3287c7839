"""Helpers shared by the metrics: layout normalisation and the Y channel used by ``test_y_channel``."""
import numpy as np

from realsr.utils.color_util import bgr2ycbcr

_INPUT_ORDERS = ('HWC', 'CHW')


def reorder_image(img, input_order='HWC'):
    """Return ``img`` as (H, W, C). 2-D images get a channel axis; 'CHW' images are transposed.

    Raises:
        ValueError: if ``input_order`` is neither 'HWC' nor 'CHW'.
    """
    if input_order not in _INPUT_ORDERS:
        raise ValueError(f"Unknown input_order {input_order!r}: supported input orders are 'HWC' and 'CHW'.")
    if img.ndim == 2:
        return img[..., None]
    if input_order == 'CHW':
        return img.transpose(1, 2, 0)
    return img


def to_y_channel(img):
    """(H, W, C) image in [0, 255] -> (H, W, 1) float32 Y channel in [0, 255] (ITU-R BT.601, BGR input).

    The conversion is done on float32 [0, 1] values (float64 dot product, float32 result) and the
    result is scaled back by 255 without rounding. Images that do not have 3 channels are only
    converted to float32 (a 1-channel image is taken as Y already).
    """
    img = img.astype(np.float32) / 255.
    if img.ndim == 3 and img.shape[2] == 3:
        img = bgr2ycbcr(img, y_only=True)[..., None]
    return img * 255.
