"""Building blocks shared by the BasicSR-style archs (names, signatures and init as in BasicSR).

Parameter creation order and init calls matter: under a fixed seed they decide the exact
initial weights, and checkpoints depend on the attribute names (state-dict keys).
"""
import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def default_init_weights(module_list, scale=1, bias_fill=0, **kwargs):
    """Kaiming-normal init (torch defaults, fan_in) scaled by ``scale`` for every Conv2d/Linear.

    Biases are filled with ``bias_fill``; BatchNorm layers get weight 1 and bias ``bias_fill``.
    Modules holding raw ``nn.Parameter``s (not Conv2d/Linear) are left untouched.
    ``kwargs`` go to ``nn.init.kaiming_normal_``.
    """
    if not isinstance(module_list, (list, tuple)):
        module_list = [module_list]
    for module in module_list:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, **kwargs)
                m.weight.data *= scale
                if m.bias is not None:
                    m.bias.data.fill_(bias_fill)
            elif isinstance(m, _BatchNorm):
                nn.init.constant_(m.weight, 1)
                if m.bias is not None:
                    m.bias.data.fill_(bias_fill)


def make_layer(basic_block, num_basic_block, **kwarg):
    """``nn.Sequential`` of ``num_basic_block`` fresh ``basic_block(**kwarg)`` (keys ``<i>.…``)."""
    return nn.Sequential(*[basic_block(**kwarg) for _ in range(num_basic_block)])


class ResidualBlockNoBN(nn.Module):
    """Residual block without BatchNorm (EDSR / modified SRResNet): x + res_scale * conv2(relu(conv1(x))).

    Unless ``pytorch_init``, both convs get ``default_init_weights(..., 0.1)`` right after
    they are created, which keeps the residual branch small at the start of training.
    """

    def __init__(self, num_feat=64, res_scale=1, pytorch_init=False):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        if not pytorch_init:
            default_init_weights([self.conv1, self.conv2], 0.1)

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


def pixel_unshuffle(x, scale):
    """Space-to-depth: (b, c, h*s, w*s) -> (b, c*s*s, h, w), channel index c*s*s + i*s + j.

    Same channel order as BasicSR's helper, so torch's op is used directly. Raises ValueError
    when h or w is not divisible by ``scale``.
    """
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f'pixel_unshuffle: input size {h}x{w} is not divisible by the factor {scale}.')
    return F.pixel_unshuffle(x, scale)


class Upsample(nn.Sequential):
    """Sub-pixel upsampler: log2(scale) x [conv nf->4nf, PixelShuffle(2)] for powers of 2, or
    [conv nf->9nf, PixelShuffle(3)] for scale 3 (ESPCN, Shi et al. 2016)."""

    def __init__(self, scale, num_feat):
        m = []
        if scale > 0 and (scale & (scale - 1)) == 0:  # power of 2
            for _ in range(int(math.log2(scale))):
                m.append(nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1))
                m.append(nn.PixelShuffle(2))
        elif scale == 3:
            m.append(nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1))
            m.append(nn.PixelShuffle(3))
        else:
            raise ValueError(f'Upsample: scale {scale} is not supported; supported scales are 2^n and 3.')
        super().__init__(*m)
