"""The arch names of the dropout papers' option files, as our archs plus a regularizer.

Each alias has the constructor arguments and the state-dict keys of its base arch, so the papers'
checkpoints load strictly, into the alias or into the base arch. The regularizer is attached in the
constructor and kept in ``self.regularizers``; the model picks it up from there (see
``SRModel.setup_regularizers``) and it acts only in training mode, so in eval mode an alias *is*
its base arch. Writing the base arch plus a ``regularizers:`` list in the option file is the
explicit, preferred form (see docs/regularizers.md); these names exist so the papers' own files run.

==========================================  ==================  ===============================
name                                        base arch           regularizer
==========================================  ==================  ===============================
MSRResNet_details_dropoutlast_channel07     MSRResNet_details   ChannelDropout(p=0.7, channel)
MSRResNet_details_dropoutlast_element07     MSRResNet_details   ChannelDropout(p=0.7, element)
MSRResNet_dropoutlast_channel07             MSRResNet           ChannelDropout(p=0.7, channel)
MSRResNet_dropoutlast_element07             MSRResNet           ChannelDropout(p=0.7, element)
RRDBNet_dropoutlast_channel05               RRDBNet             ChannelDropout(p=0.5, channel)
RRDBNet_dropoutlast_element05               RRDBNet             ChannelDropout(p=0.5, element)
MSRResNet_detailss                          MSRResNet_details   none (Simple-Align's name)
MSRResNet_details_adaptive_dropout          MSRResNet_details   AdaptiveDropout() (see below)
==========================================  ==================  ===============================

All ChannelDropout aliases act on the features entering ``conv_last`` (``conv_last:input``).

The name clash. Reflash Dropout (RDSR, CVPR 2022) and Adaptive Dropout (CVPR 2025) both define
an arch called ``MSRResNet_details_dropoutlast_channel07``, with different training behaviour:
Reflash applies Dropout2d(0.7) before ``conv_last``; Adaptive Dropout mixes Dropout2d(0.5) into
all 16 residual blocks and before ``conv_last`` on a layer-wise schedule. The two repositories'
training files are identical in everything that could tell them apart (same ``name``, arch
section, model, losses and schedule; they differ only in GPU count, batch size, paths and logging
frequencies), so no detection from the file can be reliable. Decision: the name means Reflash
Dropout -- the paper that introduced it, whose name describes it (channel dropout, p 0.7, last
layer); for Adaptive Dropout the name is misleading (its q is 0.5). A file from the Adaptive
Dropout repository gets Adaptive Dropout by changing ``network_g.type`` to
``MSRResNet_details_adaptive_dropout`` (or to ``MSRResNet_details`` plus
``regularizers: [{type: AdaptiveDropout}]``). Test files are unaffected: in eval mode every alias
equals ``MSRResNet_details``, so either repository's checkpoints evaluate the same under either name.

``MSRResNet_details_adaptive_dropout`` reproduces the Adaptive Dropout repository's arch also in
its initialisation: its residual-block convs keep PyTorch's default init (that repository's blocks
skip the x0.1 Kaiming init), created in the same order, so a seeded constructor gives that
repository's initial weights. The explicit form (``MSRResNet_details`` + ``AdaptiveDropout``) keeps
our ``MSRResNet_details`` init (Kaiming x0.1 in the blocks, as RDSR).
"""
import logging

from realsr.archs.arch_util import ResidualBlockNoBN, default_init_weights, make_layer
from realsr.archs.rrdbnet_arch import RRDBNet
from realsr.archs.srresnet_arch import MSRResNet, MSRResNet_details, _check_upscale, _MSRResNetBase
from realsr.regularizers.dropout import AdaptiveDropout, ChannelDropout
from realsr.registry import ARCH_REGISTRY

logger = logging.getLogger('realsr')
_CLASH_NOTED = False  # the name-clash note is logged once per process


@ARCH_REGISTRY.register()
class MSRResNet_details_dropoutlast_channel07(MSRResNet_details):
    """Reflash Dropout's Real-SRResNet: ``MSRResNet_details`` + Dropout2d(p=0.7) before ``conv_last``.

    Not the Adaptive Dropout repository's arch of the same name: use
    ``MSRResNet_details_adaptive_dropout`` for that (see the module docstring).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, upscale)
        self.regularizers = [ChannelDropout(p=0.7, mode='channel').attach(self)]
        global _CLASH_NOTED
        if not _CLASH_NOTED:
            _CLASH_NOTED = True
            logger.info('MSRResNet_details_dropoutlast_channel07 = Reflash Dropout (Dropout2d p=0.7 before conv_last). '
                        "For the Adaptive Dropout repository's arch of the same name use "
                        'MSRResNet_details_adaptive_dropout.')


@ARCH_REGISTRY.register()
class MSRResNet_details_dropoutlast_element07(MSRResNet_details):
    """Reflash Dropout, element-wise variant: ``MSRResNet_details`` + Dropout(p=0.7) before ``conv_last``."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, upscale)
        self.regularizers = [ChannelDropout(p=0.7, mode='element').attach(self)]


@ARCH_REGISTRY.register()
class MSRResNet_dropoutlast_channel07(MSRResNet):
    """RDSR's plain-key variant: ``MSRResNet`` (keys ``body.{i}``) + Dropout2d(p=0.7) before ``conv_last``."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, upscale)
        self.regularizers = [ChannelDropout(p=0.7, mode='channel').attach(self)]


@ARCH_REGISTRY.register()
class MSRResNet_dropoutlast_element07(MSRResNet):
    """RDSR's plain-key variant: ``MSRResNet`` + Dropout(p=0.7) before ``conv_last``."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, upscale)
        self.regularizers = [ChannelDropout(p=0.7, mode='element').attach(self)]


@ARCH_REGISTRY.register()
class RRDBNet_dropoutlast_channel05(RRDBNet):
    """Reflash Dropout's Real-RRDB: ``RRDBNet`` + Dropout2d(p=0.5) before ``conv_last``."""

    def __init__(self, num_in_ch, num_out_ch, scale=4, num_feat=64, num_block=23, num_grow_ch=32):
        super().__init__(num_in_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)
        self.regularizers = [ChannelDropout(p=0.5, mode='channel').attach(self)]


@ARCH_REGISTRY.register()
class RRDBNet_dropoutlast_element05(RRDBNet):
    """Reflash Dropout, element-wise Real-RRDB: ``RRDBNet`` + Dropout(p=0.5) before ``conv_last``."""

    def __init__(self, num_in_ch, num_out_ch, scale=4, num_feat=64, num_block=23, num_grow_ch=32):
        super().__init__(num_in_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)
        self.regularizers = [ChannelDropout(p=0.5, mode='element').attach(self)]


@ARCH_REGISTRY.register()
class MSRResNet_detailss(MSRResNet_details):
    """Simple-Align's name (double s) for ``MSRResNet_details``; also what RDSR's baseline file names.

    No regularizer of its own: Simple-Align's feature alignment is switched on by the model from
    the option file.
    """


@ARCH_REGISTRY.register()
class MSRResNet_details_adaptive_dropout(MSRResNet_details):
    """The Adaptive Dropout repository's ``MSRResNet_details_dropoutlast_channel07``:
    ``MSRResNet_details`` + :class:`AdaptiveDropout` with its defaults (q 0.5, p_init 0.3,
    step 20000) at the ``num_block`` blocks' conv1 outputs and before ``conv_last``.

    Keys and forward are ``MSRResNet_details``'s. As in that repository, the residual-block convs
    keep PyTorch's default init (conv_first, conv_hr, conv_last and upconv2 get Kaiming x0.1).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4):
        _MSRResNetBase.__init__(self)  # not MSRResNet_details.__init__: the blocks are built here
        _check_upscale(upscale)
        self.upscale = upscale
        self.num_block = num_block
        self._build_head(num_in_ch, num_feat)
        for k in range(1, num_block + 1):
            setattr(self, f'body{k}', make_layer(ResidualBlockNoBN, 1, num_feat=num_feat, pytorch_init=True))
        self._build_tail(num_out_ch, num_feat, upscale)
        default_init_weights([self.conv_first, self.conv_hr, self.conv_last], 0.1)
        if upscale == 4:
            default_init_weights(self.upconv2, 0.1)
        self.regularizers = [AdaptiveDropout().attach(self)]
