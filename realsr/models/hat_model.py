"""The HAT repository's model types, mapped to ours so its option files run unchanged.

- ``HATModel``: :class:`SRModel` (paired data, pixel loss, EMA) with window padding at test time.
- ``RealHATMSEModel``: :class:`RealESRNetModel` (on-the-fly Real-ESRGAN degradations, pixel loss).
- ``RealHATGANModel``: :class:`RealESRGANModel` (+ U-Net discriminator, perceptual and GAN losses).

Upstream ``HATModel`` reflect-pads the LQ bottom/right to a multiple of ``network_g.window_size``
(only the sides that are not multiples), runs the network whole or, with a top-level ``tile:
{tile_size, tile_pad}``, tile by tile, and crops the output to ``scale x`` the input size. That is
what :class:`~realsr.models.drct_model.WindowPaddedTestMixin` does (its ``val.pad_mode`` default,
``reflect``), so the three types here are that mixin on our SR / Real-ESRNet / Real-ESRGAN models.
The window is taken from the network (``HAT.size_multiple()``), so it also holds for a network
built under another name.
"""
from realsr.models.drct_model import WindowPaddedTestMixin
from realsr.models.realesrgan_model import RealESRGANModel, RealESRNetModel
from realsr.models.sr_model import SRModel
from realsr.registry import MODEL_REGISTRY


@MODEL_REGISTRY.register()
class HATModel(WindowPaddedTestMixin, SRModel):
    """Upstream ``HATModel``: SRModel training, window-padded (and optionally tiled) testing."""


@MODEL_REGISTRY.register()
class RealHATMSEModel(WindowPaddedTestMixin, RealESRNetModel):
    """Upstream ``RealHATMSEModel``: RealESRNetModel (pixel loss on synthesised pairs)."""


@MODEL_REGISTRY.register()
class RealHATGANModel(WindowPaddedTestMixin, RealESRGANModel):
    """Upstream ``RealHATGANModel``: RealESRGANModel (generator + U-Net discriminator)."""
