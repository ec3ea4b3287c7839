"""The DRCT repository's model types, mapped to ours so its option files run unchanged.

- ``DRCTModel``: :class:`SRModel` (paired data, pixel loss, EMA) with window padding at test time.
- ``RealDRCTMSEModel``: :class:`RealESRNetModel` (on-the-fly Real-ESRGAN degradations, pixel loss).
- ``RealDRCTGANModel``: :class:`RealESRGANModel` (+ U-Net discriminator, perceptual and GAN losses).

Test-time padding (DRCT's window attention needs sizes that are multiples of the window): the
input is padded on the bottom/right, run (whole or tiled), and the output cropped to
``scale x`` the input size. Two conventions, chosen by ``val: pad_mode`` (read when present):

- ``'reflect'`` (default; upstream ``DRCTModel.pre_process``): reflect-pad only when a side is not
  a multiple of the window, by ``(-size) mod window``. Used for the validation numbers of the
  DRCT training runs (BasicSR convention).
- ``'flip'`` (upstream ``inference.py`` and the SwinIR test script behind the papers' tables):
  always pad each side to ``(size // window + 1) * window`` (1..window extra rows/columns even
  when already divisible) with the mirror image *including* the edge row/column.

The window is the network's ``size_multiple()`` when it has one, else ``network_g.window_size``.
Tiling (``tile: {tile_size, tile_pad}`` at the top level, as upstream, or under ``val``) runs on
the padded image; tiles at the border that are not window multiples are reflect-padded and
cropped individually, so any ``tile_size`` works.
"""
import torch
from torch.nn import functional as F

from realsr.models.realesrgan_model import RealESRGANModel, RealESRNetModel
from realsr.models.sr_model import SRModel
from realsr.registry import MODEL_REGISTRY
from realsr.utils.tiling import tiled_forward

TEST_PAD_MODES = ('reflect', 'flip')


def reflect_pad_to_multiple(x, multiple):
    """Reflect-pad bottom/right so H and W are multiples of ``multiple``; returns (x, pad_h, pad_w)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'  # reflect needs pad < size
        x = F.pad(x, (0, pad_w, 0, pad_h), mode)
    return x, pad_h, pad_w


def flip_pad_to_next_multiple(x, multiple):
    """Pad bottom/right to (size // multiple + 1) * multiple with the flipped image (edge row/column
    repeated); always adds 1..multiple rows and columns. Returns (x, pad_h, pad_w)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (h // multiple + 1) * multiple - h, (w // multiple + 1) * multiple - w
    while x.shape[-2] < h + pad_h:  # one mirror copy suffices unless the image is smaller than the pad
        x = torch.cat([x, torch.flip(x, [-2])], -2)
    while x.shape[-1] < w + pad_w:
        x = torch.cat([x, torch.flip(x, [-1])], -1)
    return x[..., :h + pad_h, :w + pad_w], pad_h, pad_w


class WindowPaddedTestMixin:
    """``test()`` that pads to the network's window multiple, optionally tiles, and crops."""

    def _window_multiple(self, net):
        net = getattr(net, 'module', net)
        if hasattr(net, 'size_multiple'):
            return int(net.size_multiple())
        return int((self.opt.get('network_g') or {}).get('window_size') or 1)

    def _test_pad_mode(self):
        mode = (self.opt.get('val') or {}).get('pad_mode', 'reflect')
        if mode not in TEST_PAD_MODES:
            raise ValueError(f'val.pad_mode={mode!r}; use one of {TEST_PAD_MODES}.')
        return mode

    @torch.no_grad()
    def test(self):
        net = self.inference_net()
        was_training = net.training
        net.eval()
        multiple = self._window_multiple(net)
        lq = self.lq
        h, w = lq.shape[-2:]
        if self._test_pad_mode() == 'flip':
            lq, _, _ = flip_pad_to_next_multiple(lq, multiple)
        else:
            lq, _, _ = reflect_pad_to_multiple(lq, multiple)

        def run(x):
            x, pad_h, pad_w = reflect_pad_to_multiple(x, multiple)  # only border tiles need it
            out = net(x)
            s = out.shape[-1] // x.shape[-1]
            return out[..., :(x.shape[-2] - pad_h) * s, :(x.shape[-1] - pad_w) * s]

        tile = self._tile_opt()
        out = tiled_forward(run, lq, tile['tile_size'], tile.get('tile_pad', 10)) if tile else run(lq)
        s = out.shape[-1] // lq.shape[-1]
        self.output = out[..., :h * s, :w * s]
        if was_training:
            net.train()


@MODEL_REGISTRY.register()
class DRCTModel(WindowPaddedTestMixin, SRModel):
    """Upstream ``DRCTModel``: SRModel training, window-padded (and optionally tiled) testing."""


@MODEL_REGISTRY.register()
class RealDRCTMSEModel(WindowPaddedTestMixin, RealESRNetModel):
    """Upstream ``RealDRCTMSEModel``: RealESRNetModel (pixel loss on synthesised pairs)."""


@MODEL_REGISTRY.register()
class RealDRCTGANModel(WindowPaddedTestMixin, RealESRGANModel):
    """Upstream ``RealDRCTGANModel``: RealESRGANModel (generator + U-Net discriminator)."""


@MODEL_REGISTRY.register()
class SwinIRModel(WindowPaddedTestMixin, SRModel):
    """BasicSR's ``SwinIRModel``: SRModel training; at test time the LQ is reflect-padded to a
    window multiple and the output cropped (``val.pad_mode: flip`` for the official test script's
    convention)."""
