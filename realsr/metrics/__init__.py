"""Image quality metrics, registered in ``METRIC_REGISTRY`` under their function names.

Full-reference: ``calculate_psnr``, ``calculate_ssim`` (numpy, [0, 255] BGR images) and
``calculate_psnr_pt``, ``calculate_ssim_pt`` (torch, [0, 1] RGB batches). No-reference:
``calculate_niqe`` (lower is better). Importing this package is cheap: the metric modules (and
numpy, OpenCV, scipy) are loaded on first use.
"""
from copy import deepcopy

from realsr.registry import METRIC_REGISTRY

__all__ = ['calculate_metric', 'calculate_psnr', 'calculate_ssim', 'calculate_niqe', 'calculate_psnr_pt',
           'calculate_ssim_pt']

_LAZY = {
    'calculate_psnr': 'realsr.metrics.psnr_ssim',
    'calculate_ssim': 'realsr.metrics.psnr_ssim',
    'calculate_psnr_pt': 'realsr.metrics.psnr_ssim',
    'calculate_ssim_pt': 'realsr.metrics.psnr_ssim',
    'calculate_niqe': 'realsr.metrics.niqe',
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def calculate_metric(data, opt):
    """Compute one metric from its option dict.

    Args:
        data (dict): the images, e.g. ``{'img': sr, 'img2': gt}``.
        opt (dict): ``type`` (a registered metric name) plus its keyword arguments. The key
            ``better`` ('higher' / 'lower', used for best-value tracking) is not passed on.
    """
    opt = deepcopy(opt)
    metric_type = opt.pop('type')
    opt.pop('better', None)
    return METRIC_REGISTRY.get(metric_type)(**data, **opt)
