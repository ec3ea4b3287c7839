"""RRDBNet: the ESRGAN / Real-ESRGAN generator (BasicSR ``RRDBNet``).

ESRGAN: Wang et al., "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks",
ECCV-W 2018. Real-ESRGAN (Wang et al., ICCV-W 2021) adds scales 2 and 1, which pixel-unshuffle
the input first so the body always upsamples x4.
"""
import torch
from torch import nn
from torch.nn import functional as F

from realsr.archs.arch_util import default_init_weights, make_layer, pixel_unshuffle
from realsr.registry import ARCH_REGISTRY

# output scale -> pixel-unshuffle factor applied to the input (the body always upsamples x4)
_UNSHUFFLE = {4: 1, 2: 2, 1: 4}


class ResidualDenseBlock(nn.Module):
    """Residual dense block: five densely connected 3x3 convs, output x + 0.2 * conv5(...).

    Args:
        num_feat: channels in and out. num_grow_ch: channels each of conv1..conv4 adds.
    """

    def __init__(self, num_feat=64, num_grow_ch=32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        default_init_weights([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x  # residual scaling 0.2, as in ESRGAN


class RRDB(nn.Module):
    """Residual-in-residual dense block: three ResidualDenseBlocks, output x + 0.2 * rdb3(rdb2(rdb1(x)))."""

    def __init__(self, num_feat, num_grow_ch=32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


@ARCH_REGISTRY.register()
class RRDBNet(nn.Module):
    """ESRGAN generator: conv_first -> ``num_block`` RRDBs -> conv_body (+ long skip) ->
    2 x [nearest x2, conv, LReLU 0.2] -> conv_hr -> LReLU -> conv_last.

    Args:
        num_in_ch, num_out_ch: image channels in and out.
        scale: 4, 2 or 1. Scales 2 and 1 pixel-unshuffle the input by 2 / 4 first, so the
            input height and width must be divisible by that factor.
        num_feat: feature channels. num_block: RRDBs (keys ``body.{i}``).
        num_grow_ch: growth channels of the dense blocks.
    """

    def __init__(self, num_in_ch, num_out_ch, scale=4, num_feat=64, num_block=23, num_grow_ch=32):
        super().__init__()
        if scale not in _UNSHUFFLE:
            raise ValueError(f'RRDBNet: scale={scale!r} is not supported; use one of {tuple(_UNSHUFFLE)}.')
        self.scale = scale
        self.unshuffle = _UNSHUFFLE[scale]
        # Creation order = BasicSR's; only the dense blocks are re-initialised (in their ctor),
        # the other convs keep PyTorch's default init.
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle ** 2, num_feat, 3, 1, 1)
        self.body = make_layer(RRDB, num_block, num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        # Not in-place: hooks that keep a module's output must not see it overwritten.
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x):
        if self.unshuffle > 1:
            h, w = x.shape[-2:]
            if h % self.unshuffle or w % self.unshuffle:
                raise ValueError(f'RRDBNet (scale {self.scale}): input size {h}x{w} must be divisible by the '
                                 f'pixel-unshuffle factor {self.unshuffle}; pad the input first.')
            feat = pixel_unshuffle(x, self.unshuffle)
        else:
            feat = x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode='nearest')))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode='nearest')))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
