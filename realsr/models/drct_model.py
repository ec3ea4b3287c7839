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

from realsr.models.realesrgan_model import RealESRGANModel, RealESRNetModel
from realsr.models.sr_model import SRModel
from realsr.option_defs import with_defaults
from realsr.registry import MODEL_REGISTRY
from realsr.utils.tiling import TEST_PAD_MODES, padded_forward, size_multiple
# the padding helpers live in realsr.utils.tiling; the old names stay importable from here
from realsr.utils.tiling import flip_pad_to_next_multiple, pad_to_multiple as reflect_pad_to_multiple  # noqa: F401


class WindowPaddedTestMixin:
    """``infer()`` that pads to the network's window multiple, optionally tiles, and crops."""

    def _window_multiple(self, net):
        if hasattr(getattr(net, 'module', net), 'size_multiple'):
            return size_multiple(net)
        return int((self.opt.get('network_g') or {}).get('window_size') or 1)

    def _test_pad_mode(self):
        mode = with_defaults(self.opt, 'val')['pad_mode']
        if mode not in TEST_PAD_MODES:
            raise ValueError(f'val.pad_mode={mode!r}; use one of {TEST_PAD_MODES}.')
        return mode

    @torch.no_grad()
    def infer(self, lq):
        net = self.inference_net()
        was_training = net.training
        net.eval()
        try:
            return self._padded_forward(net, lq.to(self.device, non_blocking=True))
        finally:
            net.train(was_training)

    def _padded_forward(self, net, lq):
        return padded_forward(net, lq, self._window_multiple(net), *self._tiling(), self._test_pad_mode())


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
