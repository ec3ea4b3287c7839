"""Cross dropout (CDDNet): whole columns and whole rows of the features entering ``conv_last``
are dropped, forming a "cross" of stripes.

Each column position of each sample is zeroed across all channels and rows with probability
``p_col`` (0.2 in CDDNet), the others scaled by 1 / (1 - p_col); then each row with probability
``p_row`` (0.01), scaled by 1 / (1 - p_row). Training mode only; no parameters.

Difference from the reference, on purpose: CDDNet hard-codes the row mask's shape to
(6, 1, 256, 1), so its forward only works for batch 6 and 256-pixel-high features (an error for
any other training batch). Here both masks take their shape from the input.
"""
import torch

from realsr.regularizers.base import Regularizer
from realsr.regularizers.dropout import _probability
from realsr.registry import REGULARIZER_REGISTRY


def _stripe_mask(x, p, shape):
    """A {0, 1/(1-p)} mask of ``shape`` (broadcast over the other dims), drawn from the global
    RNG on ``x``'s device."""
    keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1 - p)
    return keep / (1 - p)


@REGULARIZER_REGISTRY.register()
class CrossDropout(Regularizer):
    """``CrossDropout(p_col=0.2, p_row=0.01, sites=('conv_last:input',))``."""

    def __init__(self, p_col=0.2, p_row=0.01, sites=None):
        super().__init__(sites)
        self.p_col = _probability('CrossDropout', 'p_col', p_col)
        self.p_row = _probability('CrossDropout', 'p_row', p_row)

    def apply(self, x, index, name):
        if x.dim() != 4:
            raise ValueError(f"CrossDropout needs (B, C, H, W) features, but the site at '{name}' gives {tuple(x.shape)}")
        b, _, h, w = x.shape
        if self.p_col > 0:
            x = x * _stripe_mask(x, self.p_col, (b, 1, 1, w))
        if self.p_row > 0:
            x = x * _stripe_mask(x, self.p_row, (b, 1, h, 1))
        return x

    def __repr__(self):
        return f'CrossDropout(p_col={self.p_col}, p_row={self.p_row}, sites={self.sites})'
