"""Discriminators: Real-ESRGAN's U-Net with spectral norm, and the ESRGAN/SRGAN VGG-style one.

``UNetDiscriminatorSN``: Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution
with Pure Synthetic Data", ICCV-W 2021 (BasicSR ``basicsr/archs/discriminator_arch.py``).
Module names, creation order and state-dict keys follow BasicSR, so the released
``RealESRGAN_x4plus_netD.pth`` loads strictly. Spectral norm uses the classic hook API
(``torch.nn.utils.spectral_norm``): its keys are ``weight_orig`` / ``weight_u`` / ``weight_v``;
the newer parametrization API would store ``parametrizations.weight.original*`` instead.

``VGGStyleDiscriminator``: Ledig et al., SRGAN (CVPR 2017) / Wang et al., ESRGAN (ECCV-W 2018).
"""
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from realsr.registry import ARCH_REGISTRY


def _lrelu(x):
    return F.leaky_relu(x, negative_slope=0.2)


def _up2(x):
    return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)


@ARCH_REGISTRY.register()
class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator with spectral normalisation; outputs a per-pixel logit map of the
    input's size (1 channel).

    conv0 (3x3, bias, no SN) -> three SN 4x4 stride-2 convs (x2, x4, x8 channels) -> three
    [bilinear x2, SN 3x3 conv] stages back to ``num_feat`` channels, each optionally adding the
    encoder feature of the same size -> two SN 3x3 convs -> conv9 (3x3, bias, no SN, 1 channel).
    LeakyReLU 0.2 after every conv but conv9.

    Args:
        num_in_ch: image channels. num_feat: base feature channels.
        skip_connection: add the encoder features in the decoder. With skips, the input height
            and width must be multiples of 8 (otherwise the decoder sizes cannot match).
    """

    def __init__(self, num_in_ch, num_feat=64, skip_connection=True):
        super().__init__()
        self.skip_connection = skip_connection
        # Creation order = BasicSR's, so seeded initialisation (conv init, then SN's u/v draws) matches.
        self.conv0 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        # encoder
        self.conv1 = spectral_norm(nn.Conv2d(num_feat, num_feat * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(num_feat * 2, num_feat * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(num_feat * 4, num_feat * 8, 4, 2, 1, bias=False))
        # decoder
        self.conv4 = spectral_norm(nn.Conv2d(num_feat * 8, num_feat * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(num_feat * 4, num_feat * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1, bias=False))
        # head
        self.conv7 = spectral_norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(num_feat, 1, 3, 1, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        if self.skip_connection and (h % 8 or w % 8):
            raise ValueError(f'UNetDiscriminatorSN: input size {h}x{w} must be a multiple of 8 '
                             '(three stride-2 levels whose skips are added back).')
        x0 = _lrelu(self.conv0(x))
        x1 = _lrelu(self.conv1(x0))
        x2 = _lrelu(self.conv2(x1))
        x3 = _lrelu(self.conv3(x2))

        x4 = _lrelu(self.conv4(_up2(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = _lrelu(self.conv5(_up2(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = _lrelu(self.conv6(_up2(x5)))
        if self.skip_connection:
            x6 = x6 + x0

        out = _lrelu(self.conv7(x6))
        out = _lrelu(self.conv8(out))
        return self.conv9(out)


@ARCH_REGISTRY.register()
class VGGStyleDiscriminator(nn.Module):
    """VGG-style discriminator for 128x128 or 256x256 inputs; outputs one logit per image.

    Five (six for 256) stages of [3x3 conv, BN, LReLU, 4x4 stride-2 conv, BN, LReLU] (the very
    first conv has a bias and no BN) down to 4x4, then linear(num_feat*8*4*4 -> 100), LReLU, linear(100 -> 1).
    Channels: num_feat, x2, x4, x8, x8 (, x8).

    Args:
        num_in_ch: image channels. num_feat: base feature channels.
        input_size: 128 or 256; the input height must equal it.
    """

    def __init__(self, num_in_ch, num_feat, input_size=128):
        super().__init__()
        if input_size not in (128, 256):
            raise ValueError(f'VGGStyleDiscriminator: input_size must be 128 or 256, got {input_size!r}.')
        self.input_size = input_size
        # (in, out) channels of stages 0..4 (5 for 256); attribute names conv{i}_{0,1}, bn{i}_{0,1}
        widths = [num_feat, num_feat * 2, num_feat * 4, num_feat * 8, num_feat * 8, num_feat * 8]
        self.num_stages = 5 if input_size == 128 else 6
        self.conv0_0 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(num_feat, num_feat, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(num_feat, affine=True)
        for i in range(1, self.num_stages):
            c_in, c_out = widths[i - 1], widths[i]
            setattr(self, f'conv{i}_0', nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False))
            setattr(self, f'bn{i}_0', nn.BatchNorm2d(c_out, affine=True))
            setattr(self, f'conv{i}_1', nn.Conv2d(c_out, c_out, 4, 2, 1, bias=False))
            setattr(self, f'bn{i}_1', nn.BatchNorm2d(c_out, affine=True))
        self.linear1 = nn.Linear(num_feat * 8 * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x):
        if x.size(2) != self.input_size or x.size(3) != self.input_size:
            raise ValueError(f'VGGStyleDiscriminator: input must be {self.input_size}x{self.input_size}, '
                             f'got {tuple(x.shape[-2:])}.')
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        for i in range(1, self.num_stages):
            feat = self.lrelu(getattr(self, f'bn{i}_0')(getattr(self, f'conv{i}_0')(feat)))
            feat = self.lrelu(getattr(self, f'bn{i}_1')(getattr(self, f'conv{i}_1')(feat)))
        feat = self.lrelu(self.linear1(feat.flatten(1)))  # spatial size is 4x4 here
        return self.linear2(feat)
