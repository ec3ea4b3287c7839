"""``SRModel``: supervised SR on paired (LQ, GT) data with pixel losses, EMA and
BasicSR's checkpoint layout."""
import logging
from collections import OrderedDict

import torch

from realsr import option_defs as defs
from realsr.archs import build_network
from realsr.runtime import checkpoint
from realsr.runtime.ema import update_ema
from realsr.runtime.train_step import module_to_channels_last
from realsr.losses import build_loss
from realsr.models.base_model import BaseModel
from realsr.regularizers import build_regularizers
from realsr.regularizers.base import Regularizer
from realsr.compat import simple_align_regularizers
from realsr.registry import MODEL_REGISTRY
from realsr.utils.tiling import padded_forward

logger = logging.getLogger('realsr')


@MODEL_REGISTRY.register()
class SRModel(BaseModel):
    """One generator ``net_g`` trained with ``pixel_opt`` (and ``perceptual_opt`` when the
    perceptual loss is available), optionally with an EMA copy ``net_g_ema`` used for testing."""

    def __init__(self, opt):
        super().__init__(opt)
        self.net_g = self.model_to_device(build_network(opt['network_g']), compile_net=True)
        self.print_network(self.net_g)
        self.load_pretrained(self.net_g, 'g')
        self.net_g_ema = None
        self.regularizers = []
        if self.is_train:
            self.init_training_settings()

    def setup_regularizers(self):
        """The ``regularizers:`` of the option file, attached to net_g, plus any an alias arch
        carries itself (e.g. ``MSRResNet_details_dropoutlast_channel07``)."""
        bare = checkpoint.unwrap(self.net_g)
        self.regularizers = list(getattr(bare, 'regularizers', [])) + build_regularizers(
            self.opt.get('regularizers'), bare)
        # Simple-Align's own files switch it on by name (realsr.compat)
        self.regularizers += build_regularizers(simple_align_regularizers(self.opt), bare)
        for reg in self.regularizers:
            logger.info('Regularizer: %s at %s', reg, ', '.join(f'{name}:{side}' for _, name, side in reg.attached))
        self.num_views = max([reg.num_views for reg in self.regularizers], default=1)
        self.refuse_data_parallel_regularizers()

    def refuse_data_parallel_regularizers(self):
        """DataParallel splits the batch over replicas: a regularizer comparing views ([view1; view2]
        would be split apart) or collecting features for a loss (each replica overwrites them) would
        silently compute the wrong thing. DDP runs each replica in its own process and is right."""
        if not self.uses_data_parallel():
            return
        bad = [type(reg).__name__ for reg in self.regularizers
               if reg.num_views > 1 or type(reg).losses is not Regularizer.losses]
        if bad:
            n = self.opt.get('num_gpu')
            raise ValueError(f"{', '.join(bad)} cannot run under DataParallel (num_gpu: {n} without a launcher): "
                             'the replicas would each see part of the views and overwrite the collected features. '
                             f'Use DDP: torchrun --nproc_per_node={n} realsr/train.py -opt <file> --launcher pytorch '
                             '(or num_gpu: 1).')

    def regularizer_losses(self, current_iter, loss_dict):
        """Extra loss terms of the regularizers after a forward pass; added to ``loss_dict``."""
        total = 0
        for reg in self.regularizers:
            for name, value in reg.losses().items():
                loss_dict[name] = value
                total = total + value
        return total

    def content_losses(self, output, pix_target, percep_target, loss_dict, prefix='l_'):
        """Pixel, perceptual and style losses (those configured), added to ``loss_dict`` as
        ``<prefix>pix``, ``<prefix>percep``, ``<prefix>style``; returns their sum. The VGG runs
        under the step's autocast; the distances are taken in fp32."""
        total = 0
        if self.cri_pix is not None:
            loss_dict[f'{prefix}pix'] = self.cri_pix(output, pix_target)
            total = total + loss_dict[f'{prefix}pix']
        if self.cri_perceptual is not None:
            with self.train_step.autocast():
                percep, style = self.cri_perceptual(output, percep_target)
            for name, value in (('percep', percep), ('style', style)):
                if value is not None:
                    loss_dict[f'{prefix}{name}'] = value
                    total = total + value
        return total

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_g.train()
        self.setup_regularizers()
        self.ema_decay = train_opt['ema_decay']  # defaults: realsr/option_defs.py
        if self.ema_decay > 0:
            logger.info('Use Exponential Moving Average with decay: %s', self.ema_decay)
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            if self.train_step.precision.channels_last:
                module_to_channels_last(self.net_g_ema)
            self.init_ema_weights()
            self.net_g_ema.eval()
        self.cri_pix = build_loss(train_opt['pixel_opt']).to(self.device) if train_opt.get('pixel_opt') else None
        self.cri_perceptual = (build_loss(train_opt['perceptual_opt']).to(self.device)
                               if train_opt.get('perceptual_opt') else None)
        if self.cri_pix is None and self.cri_perceptual is None:
            raise ValueError('SRModel needs train.pixel_opt or train.perceptual_opt: both are missing.')
        self.setup_optimizers()
        self.setup_schedulers()

    def init_ema_weights(self):
        """BasicSR's rule: the EMA copy loads ``pretrain_network_g``'s 'params_ema' (whatever
        param_key_g says; 'params' when absent), or starts as a copy of net_g."""
        path_opt = self.opt.get('path', {})
        if path_opt.get('pretrain_network_g') is not None:
            checkpoint.load_network(self.net_g_ema, path_opt['pretrain_network_g'],
                                    path_opt.get('strict_load_g', True), 'params_ema')
        else:
            update_ema(self.net_g_ema, self.net_g, 0)

    def generator_networks(self):
        """The networks ``optim_g`` trains (DASR adds its degradation predictor)."""
        return [self.net_g]

    def setup_optimizers(self):
        params = []
        for net in self.generator_networks():
            for name, param in net.named_parameters():
                if param.requires_grad:
                    params.append(param)
                else:
                    logger.warning('Params %s will not be optimized.', name)
        self.optimizer_g = self.get_optimizer(self.opt['train']['optim_g'], params)
        self.optimizers.append(self.optimizer_g)
        ema = (self.net_g_ema, self.net_g, self.ema_decay) if self.net_g_ema is not None else None
        self.train_step.add_group('g', self.generator_networks(), self.optimizer_g, ema=ema)

    def feed_data(self, data):
        if self.is_train and getattr(self, 'num_views', 1) > 1:
            # paired data has one LQ per GT: a two-view regularizer would compare unrelated images
            raise ValueError(f'a regularizer needs {self.num_views} independently degraded views of each GT, which '
                             'only models that degrade on the fly provide (RealESRNetModel / RealESRGANModel with '
                             'high_order_degradation: true); remove it or change model_type')
        self.lq = data['lq'].to(self.device, non_blocking=True)
        self.gt = data['gt'].to(self.device, non_blocking=True) if 'gt' in data else None

    def set_iteration(self, current_iter):
        for reg in self.regularizers:
            reg.set_iteration(current_iter)

    def optimize_parameters(self, current_iter):
        """One micro-batch (an iteration with ``accum_iter: 1``); the step mechanics are
        :class:`realsr.runtime.train_step.TrainStep`'s."""
        self.set_iteration(current_iter)
        with self.train_step.micro_batch() as step:
            self.output = step.forward(self.net_g, self.lq)
            loss_dict = OrderedDict()
            l_total = self.regularizer_losses(current_iter, loss_dict)
            l_total = l_total + self.content_losses(self.output, self.gt, self.gt, loss_dict)
            step.backward('g', l_total, loss_dict)
            step.log(loss_dict)

    def _tiling(self):
        """``(tile_size, tile_pad)`` of ``val.tile``, else of the top-level ``tile`` (realsr-test's),
        with the defined defaults (tile_size 0: no tiling)."""
        tile = (self.opt.get('val') or {}).get('tile') or self.opt.get('tile')
        return defs.value(tile, defs.TILE, 'tile_size'), defs.value(tile, defs.TILE, 'tile_pad')

    def inference_net(self):
        """The network that tests and validates: the EMA copy, else net_g without its DDP or
        compile wrapper (DDP's forward would wait for the other ranks; validation sizes vary)."""
        return self.net_g_ema if self.net_g_ema is not None else checkpoint.unwrap(self.net_g)

    @torch.no_grad()
    def infer(self, lq):
        """The super-resolved ``lq`` (NCHW in [0, 1], any device) on the model's device: the
        inference net in eval mode (its mode restored after), tiled when ``val.tile`` is set. The
        one way validation, realsr-test and tools run a model: it reads no ``is_train`` and leaves
        ``self.lq``/``self.gt``/``self.output`` as they are."""
        net = self.inference_net()
        was_training = net.training
        net.eval()
        try:
            lq = lq.to(self.device, non_blocking=True)
            return padded_forward(net, lq, 1, *self._tiling())
        finally:
            net.train(was_training)

    def test(self):
        """BasicSR's ``test()``: :meth:`infer` on the fed ``self.lq`` into ``self.output``."""
        self.output = self.infer(self.lq)

    def get_current_visuals(self):
        out = OrderedDict(lq=self.lq.detach().cpu(), result=self.output.detach().cpu())
        if self.gt is not None:
            out['gt'] = self.gt.detach().cpu()
        return out

    def save(self, epoch, current_iter, extra_state=None, rank_state=None):
        if self.net_g_ema is not None:
            self.save_network([self.net_g, self.net_g_ema], 'net_g', current_iter, ['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', current_iter)
        self.save_training_state(epoch, current_iter, extra_state, rank_state)
