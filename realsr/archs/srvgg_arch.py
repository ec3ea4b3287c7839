"""SRVGGNetCompact: Real-ESRGAN's compact VGG-style SR network (BasicSR/Real-ESRGAN ``SRVGGNetCompact``).

Wang et al., Real-ESRGAN (ICCV-W 2021); the compact net behind ``realesr-general-x4v3``
(num_feat 64, num_conv 32, prelu) and ``realesr-animevideov3`` (num_feat 64, num_conv 16, prelu).
All its convolutions run at the input resolution: the last one makes num_out_ch * upscale²
channels, a PixelShuffle turns them into the image, and the nearest-upsampled input is added, so
the body learns the residual.

Checkpoint compatibility (Real-ESRGAN's released ``.pth`` files, which store ``params``, load
with ``strict=True``): one ``nn.ModuleList`` named ``body`` with convolutions at the even
indices and activations at the odd ones -- ``body.0`` (first conv), ``body.1`` (activation),
``body.{2k}``/``body.{2k+1}`` (k = 1..num_conv), and ``body.{2 num_conv + 2}`` (the last conv).
Only PReLU has parameters (``body.{odd}.weight``, one slope per channel); ReLU and LeakyReLU
(slope 0.1) add no keys, so relu and leakyrelu checkpoints have the same keys.

Regularizer site: there is no ``conv_last``; the features before the last convolution are the
input of ``body.{2 num_conv + 2}``, e.g. ``body.34:input`` for num_conv 16 (see
:meth:`SRVGGNetCompact.last_conv_site`). Activations are not in-place, so a hook that keeps a
convolution's output sees it unchanged (the results are those of the in-place reference).
"""
from torch import nn
from torch.nn import functional as F

from realsr.registry import ARCH_REGISTRY

ACT_TYPES = ('relu', 'prelu', 'leakyrelu')


def _activation(act_type, num_feat):
    if act_type == 'relu':
        return nn.ReLU()
    if act_type == 'prelu':
        return nn.PReLU(num_parameters=num_feat)
    return nn.LeakyReLU(negative_slope=0.1)


@ARCH_REGISTRY.register()
class SRVGGNetCompact(nn.Module):
    """conv -> act -> num_conv x (conv -> act) -> conv to num_out_ch * upscale² -> PixelShuffle,
    plus the nearest-upsampled input.

    Args (names and defaults as BasicSR / Real-ESRGAN):
        num_in_ch, num_out_ch: image channels in and out.
        num_feat: feature channels. num_conv: convolutions between the first and the last.
        upscale: the PixelShuffle factor (any positive integer; 1 restores without upscaling).
        act_type: 'relu', 'prelu' (one learned slope per channel) or 'leakyrelu' (slope 0.1).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type='prelu'):
        super().__init__()
        if act_type not in ACT_TYPES:
            raise ValueError(f'SRVGGNetCompact: act_type={act_type!r}; use one of {ACT_TYPES}.')
        for name, value, low in (('num_in_ch', num_in_ch, 1), ('num_out_ch', num_out_ch, 1),
                                 ('num_feat', num_feat, 1), ('num_conv', num_conv, 0), ('upscale', upscale, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f'SRVGGNetCompact: {name}={value!r}; use an integer >= {low}.')
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_conv = num_conv
        self.upscale = upscale
        self.act_type = act_type
        # Creation order = the reference's, so a seeded constructor gives its weights.
        self.body = nn.ModuleList([nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)])
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(_activation(act_type, num_feat))
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def last_conv_site(self):
        """The regularizer site of the features entering the last convolution (the analogue of
        other archs' ``conv_last:input``)."""
        return f'body.{len(self.body) - 1}:input'

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=self.upscale, mode='nearest')
        return self.upsampler(out) + base
