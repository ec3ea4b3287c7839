"""Modified SRResNet (BasicSR ``MSRResNet``) and its ``MSRResNet_details`` key layout.

SRResNet: Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network", CVPR 2017. BasicSR's modified version drops BatchNorm and the long
trunk skip and adds a bilinear upsample of the input to the output.

``MSRResNet_details`` is the "Real-SRResNet" of the Reflash Dropout (CVPR 2022), Simple-Align
(CVPR 2024) and Adaptive Dropout (CVPR 2025) repositories: the same network with the body
stored as ``body1``..``body{N}`` (keys ``body{K}.0.conv{1,2}.*``).

The forward goes through named submodules only (``conv_first``, body, ``upconv1/2``,
``pixel_shuffle``, ``conv_hr``, ``lrelu``, ``conv_last``) so regularizers can attach hooks,
e.g. a forward pre-hook on ``conv_last`` sees the features entering it.
"""
from torch import nn
from torch.nn import functional as F

from realsr.archs.arch_util import ResidualBlockNoBN, default_init_weights, make_layer
from realsr.registry import ARCH_REGISTRY

_SUPPORTED_UPSCALES = (2, 3, 4)


def _check_upscale(upscale):
    if upscale not in _SUPPORTED_UPSCALES:
        raise ValueError(f'MSRResNet: upscale={upscale!r} is not supported; use one of {_SUPPORTED_UPSCALES}.')


class _MSRResNetBase(nn.Module):
    """Head, upsampler and tail shared by both layouts; subclasses build the body and define
    ``forward_body(feat)``."""

    def _build_head(self, num_in_ch, num_feat):
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)

    def _build_tail(self, num_out_ch, num_feat, upscale):
        # x4 = two x2 stages sharing one PixelShuffle(2) module; x2/x3 = one stage.
        if upscale == 4:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        else:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * upscale * upscale, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(upscale)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        # Not in-place: a hook that keeps a module's output (e.g. conv_hr) must not see it
        # overwritten by the activation. Results are identical to BasicSR's in-place version.
        self.lrelu = nn.LeakyReLU(negative_slope=0.1)

    def forward(self, x):
        feat = self.lrelu(self.conv_first(x))
        out = self.forward_body(feat)
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.upscale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        base = F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)
        return out + base


@ARCH_REGISTRY.register()
class MSRResNet(_MSRResNetBase):
    """Modified SRResNet (BasicSR): conv -> ``num_block`` x ResidualBlockNoBN -> pixel-shuffle
    upsampler -> conv_hr -> conv_last, plus a bilinear upsample of the input.

    Args:
        num_in_ch, num_out_ch: image channels in and out.
        num_feat: feature channels. num_block: residual blocks (keys ``body.{i}``).
        upscale: 2, 3 or 4.
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4):
        super().__init__()
        _check_upscale(upscale)
        self.upscale = upscale
        # Creation order = BasicSR's, so a seeded constructor gives BasicSR's exact weights.
        self._build_head(num_in_ch, num_feat)
        self.body = make_layer(ResidualBlockNoBN, num_block, num_feat=num_feat)
        self._build_tail(num_out_ch, num_feat, upscale)
        default_init_weights([self.conv_first, self.upconv1, self.conv_hr, self.conv_last], 0.1)
        if upscale == 4:
            default_init_weights(self.upconv2, 0.1)

    def forward_body(self, feat):
        return self.body(feat)


@ARCH_REGISTRY.register()
class MSRResNet_details(_MSRResNetBase):  # upstream name, used in option files
    """``MSRResNet`` with the body split into ``body1``..``body{num_block}`` (Reflash Dropout's
    Real-SRResNet layout). Same math and parameter count; loads those papers' checkpoints.

    Init differs from MSRResNet only in that upconv1 keeps PyTorch's default init (as upstream).
    Upstream hard-codes 16 blocks and ignores ``num_block``; here ``num_block`` is honoured
    (the default 16 gives the upstream network).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4):
        super().__init__()
        _check_upscale(upscale)
        self.upscale = upscale
        self.num_block = num_block
        self._build_head(num_in_ch, num_feat)
        for k in range(1, num_block + 1):
            setattr(self, f'body{k}', make_layer(ResidualBlockNoBN, 1, num_feat=num_feat))
        self._build_tail(num_out_ch, num_feat, upscale)
        default_init_weights([self.conv_first, self.conv_hr, self.conv_last], 0.1)
        if upscale == 4:
            default_init_weights(self.upconv2, 0.1)

    def forward_body(self, feat):
        for k in range(1, self.num_block + 1):
            feat = getattr(self, f'body{k}')(feat)
        return feat
