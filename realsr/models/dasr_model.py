"""DASR and CDDNet: a degradation predictor ``net_p`` mixes the experts of a dynamic generator.

- ``SRGANDynamicModel`` (DASR's name): ``net_p`` (``network_p``, e.g. ``Degradation_Predictor``)
  maps the LQ to (predicted degradation parameters, mixing weights); ``net_g`` (``network_g``,
  ``MSRResNetDynamic``) super-resolves with those weights. Testing uses ``net_p`` in eval mode and
  ``net_g_ema`` when there is one. Training on paired data, with ``network_d`` as discriminator.
- ``DASRModel``: the same trained on GT images degraded on the fly in DASR's degradation spaces
  (:mod:`realsr.degradations.dasr_spaces`), which also give the regression targets.

Generator losses: ``pixel_opt`` (l_pix), ``regress_opt`` on the predicted parameters
(l_regression), ``perceptual_opt`` (l_percep, l_style), ``artifacts_opt`` (l_g_artifacts: CDDNet's
LDL loss, with the artifact map taken against the EMA generator) and ``gan_opt`` (l_g_gan). One
optimizer (``optim_g``) trains net_g and net_p together; the EMA covers net_g only.

Where this differs from the reference, on purpose:
- ``path.pretrain_network_g`` holding an ordinary MSRResNet is recognised by its content (the
  reference looks for 'pretrained_models' in the path) and repeated over the experts. A block
  count that differs from ``network_g.num_block`` is an error unless ``network_g.init_dynamic``
  is true (see docs/archs.md, "DASR / CDDNet").
- ``DASRModel`` passes the degradation parameters through the training-pair pool with their
  images; the reference shuffles only lq/gt, so its regression targets stop matching the LQs once
  the pool is full.
"""
import logging
from collections import OrderedDict

import torch

from realsr.archs import build_network
from realsr.archs.dasr_arch import PredictorConditionedNet
from realsr.degradations.dasr_spaces import DASRDegradation
from realsr.runtime import checkpoint
from realsr.losses import build_loss
from realsr.losses.ldl_loss import get_refined_artifact_map
from realsr.models.realesrgan_model import DiscriminatorMixin, OnTheFlyDegradationMixin
from realsr.models.sr_model import SRModel
from realsr.registry import MODEL_REGISTRY
from realsr.utils.state_dict import strip_module_prefix
from realsr.utils.tiling import padded_forward

logger = logging.getLogger('realsr')

LDL_KSIZE = 7  # CDDNet's (and LDL's) window for the local variance of the residual
_GT_USM_KEYS = ('gt_usm', 'l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm')


def msrresnet_block_count(state_dict):
    """Number of residual blocks of an MSRResNet state dict (keys ``body.<i>.conv1.weight``)."""
    return len({k.split('.')[1] for k in state_dict if k.startswith('body.') and k.endswith('.conv1.weight')})


@MODEL_REGISTRY.register()
class SRGANDynamicModel(DiscriminatorMixin, SRModel):
    """Degradation predictor + dynamic generator (+ discriminator when training)."""

    def __init__(self, opt):
        super().__init__(opt)  # net_g; when training also net_p, net_d, EMA, losses, optimizers
        self.setup_predictor()

    # -- networks ----------------------------------------------------------------------------
    def setup_predictor(self):
        if getattr(self, 'net_p', None) is not None:
            return
        if 'network_p' not in self.opt:
            raise ValueError(f'{type(self).__name__} needs network_p, the degradation predictor that gives '
                             'net_g its expert weights (e.g. type: Degradation_Predictor)')
        self.net_p = self.model_to_device(build_network(self.opt['network_p']))
        self.print_network(self.net_p)
        self.load_pretrained(self.net_p, 'p')

    def load_pretrained(self, net, key):
        path_opt = self.opt.get('path') or {}
        if key == 'g':
            loaded = self.load_generator(net, path_opt.get('param_key_g', 'params'))
            self.require_initialised(net)
            return loaded
        if key == 'p' and path_opt.get('pretrain_network_p') is not None:
            # the reference loads net_p with strict_load_g; strict_load_p overrides that
            strict = path_opt.get('strict_load_p', path_opt.get('strict_load_g', True))
            checkpoint.load_network(net, path_opt['pretrain_network_p'], strict, path_opt.get('param_key_p', 'params'))
            return True
        return super().load_pretrained(net, key)

    def load_generator(self, net, param_key):
        """Load ``path.pretrain_network_g`` into ``net`` (net_g or its EMA copy): a dynamic
        checkpoint as it is, an ordinary MSRResNet one repeated over the experts."""
        path_opt = self.opt.get('path') or {}
        load_path = path_opt.get('pretrain_network_g')
        if load_path is None:
            return False
        strict = path_opt.get('strict_load_g', True)
        bare = checkpoint.unwrap(net)
        state = strip_module_prefix(checkpoint.read_network_file(load_path, param_key))
        if not (hasattr(bare, 'load_msrresnet_state_dict') and bare.is_msrresnet_state_dict(state)):
            checkpoint.load_network(net, load_path, strict, param_key)
            return True
        blocks_match = self._check_msrresnet_blocks(bare, state, load_path)
        missing, unexpected = bare.load_msrresnet_state_dict(state, strict=strict and blocks_match)
        logger.info('Initialised %s from the MSRResNet checkpoint %s [%s], each weight repeated over the %d experts '
                    '(not in the file: %s; unused: %s).', type(bare).__name__, load_path, param_key,
                    bare.num_models, missing or 'none', unexpected or 'none')
        return True

    def _check_msrresnet_blocks(self, bare, state, load_path):
        """True when the MSRResNet checkpoint has ``num_block`` blocks; otherwise an error, unless
        ``network_g.init_dynamic`` lets the blocks the file lacks keep their random init."""
        file_blocks, num_block = msrresnet_block_count(state), bare.num_block
        if file_blocks == num_block:
            return True
        if not self.opt['network_g'].get('init_dynamic', False):
            raise ValueError(
                f'path.pretrain_network_g {load_path!r} is an MSRResNet checkpoint with {file_blocks} residual blocks, '
                f'but network_g.num_block is {num_block}: the dynamic weights of the other blocks would never be '
                f'initialised. Set network_g.num_block: {file_blocks} (the released CDDNet test file and its '
                'checkpoint use 16; the 50 of its train file cannot be started from the 16-block MSRResNet), or set '
                'network_g.init_dynamic: true to start the blocks the file lacks from a random init.')
        logger.warning('network_g.init_dynamic: true and the MSRResNet checkpoint has %d blocks for %d: %s',
                       file_blocks, num_block,
                       f'blocks {file_blocks}-{num_block - 1} keep their random init' if file_blocks < num_block
                       else f'the file\'s blocks {num_block}-{file_blocks - 1} are not used')
        return False

    @staticmethod
    def require_initialised(net):
        if getattr(checkpoint.unwrap(net), 'dynamic_initialized', True) is False:
            raise RuntimeError(
                'network_g: the Dynamic_conv2d weights were never initialised (the reference leaves them as '
                'uninitialised memory). Set path.pretrain_network_g to a MSRResNetDynamic checkpoint or to an '
                'ordinary MSRResNet one (repeated over the experts), or set network_g.init_dynamic: true for a '
                'random init.')

    # -- training settings ---------------------------------------------------------------------
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.setup_predictor()
        self.net_p.train()
        self.setup_discriminator()
        if self.cri_gan is None:
            raise ValueError(f'{type(self).__name__} trains with a discriminator: train.gan_opt is missing')
        self.cri_regress = (build_loss(train_opt['regress_opt']).to(self.device)
                            if train_opt.get('regress_opt') else None)
        self.cri_artifacts = (build_loss(train_opt['artifacts_opt']).to(self.device)
                              if train_opt.get('artifacts_opt') else None)
        if train_opt.get('cycle_opt'):
            logger.info('train.cycle_opt is not used (DASR and CDDNet declare it but never read it).')
        super().init_training_settings()  # regularizers, EMA (init_ema_weights), losses, optimizers
        if self.cri_artifacts is not None and self.net_g_ema is None:
            raise ValueError('train.artifacts_opt (the LDL artifact loss) compares with the EMA generator: '
                             'set train.ema_decay > 0 (CDDNet uses 0.999)')

    def init_ema_weights(self):
        """As SRModel ('params_ema', falling back to 'params'), with the MSRResNet conversion."""
        if not self.load_generator(self.net_g_ema, 'params_ema'):
            self.net_g_ema.load_state_dict(checkpoint.unwrap(self.net_g).state_dict())
        self.require_initialised(self.net_g_ema)  # e.g. a partial file loaded non-strictly

    def generator_networks(self):
        return [self.net_g, self.net_p]  # one optimizer for both, as DASR

    def setup_optimizers(self):
        super().setup_optimizers()
        self.setup_optimizer_d()

    # -- steps ---------------------------------------------------------------------------------
    def feed_data(self, data):
        super().feed_data(data)
        params = data.get('degradation_params')
        self.degradation_params = params.to(self.device) if params is not None else None

    def artifact_loss(self, weights):
        """CDDNet's LDL loss: the criterion between map * SR and map * GT, the map marking where
        net_g does worse than its EMA copy (no gradient through the EMA)."""
        with torch.no_grad():
            output_ema = self.train_step.forward(self.net_g_ema, self.lq, weights)
        artifact_map = get_refined_artifact_map(self.gt, self.output, output_ema, LDL_KSIZE)
        return self.cri_artifacts(artifact_map * self.output, artifact_map * self.gt)

    def optimize_parameters(self, current_iter):
        self.set_iteration(current_iter)
        g_due = self.generator_step_due(current_iter)
        with self.train_step.micro_batch() as step:
            self.set_discriminator_trainable(False)
            with torch.set_grad_enabled(g_due):  # no graph kept when only D trains on the output
                predicted_params, weights = step.forward(self.net_p, self.lq)
                self.output = step.forward(self.net_g, self.lq, weights)
            loss_dict = OrderedDict()
            if g_due:
                l_g_total = self.regularizer_losses(current_iter, loss_dict)
                l_g_total = l_g_total + self.content_losses(self.output, self.gt, self.gt, loss_dict)
                if self.cri_regress is not None:
                    if self.degradation_params is None:
                        raise ValueError('train.regress_opt needs the degradation parameters of each LQ, which paired '
                                         'data does not have: use DASRModel (degradations on the fly) or remove '
                                         'regress_opt')
                    loss_dict['l_regression'] = self.cri_regress(predicted_params, self.degradation_params)
                    l_g_total = l_g_total + loss_dict['l_regression']
                if self.cri_artifacts is not None:
                    loss_dict['l_g_artifacts'] = self.artifact_loss(weights)
                    l_g_total = l_g_total + loss_dict['l_g_artifacts']
                loss_dict['l_g_gan'] = self.cri_gan(step.forward(self.net_d, self.output), True, is_disc=False)
                l_g_total = l_g_total + loss_dict['l_g_gan']
                step.backward('g', l_g_total, loss_dict)
            self.discriminator_step(step, self.gt, self.output, loss_dict)
            step.log(loss_dict)

    @torch.no_grad()
    def infer(self, lq):
        """net_p in eval mode gives the expert weights from the whole LQ; net_g_ema (or net_g) runs
        with them, in tiles when ``val.tile`` is set (every tile with the whole image's weights).
        Modes are restored after; no model state is read or written (see :meth:`SRModel.infer`)."""
        net_g, net_p = self.inference_net(), checkpoint.unwrap(self.net_p)
        modes = [(net, net.training) for net in (net_p, net_g)]
        for net, _ in modes:
            net.eval()
        try:
            lq = lq.to(self.device, non_blocking=True)
            # padded_forward conditions on the whole image, then tiles
            return padded_forward(PredictorConditionedNet(net_g, net_p), lq, 1, *self._tiling())
        finally:
            for net, was_training in modes:
                net.train(was_training)

    def save(self, epoch, current_iter, extra_state=None, rank_state=None):
        self.save_network(self.net_p, 'net_p', current_iter)
        if getattr(self, 'net_d', None) is not None:
            self.save_network(self.net_d, 'net_d', current_iter)
        super().save(epoch, current_iter, extra_state, rank_state)  # net_g (+ EMA), then the training state


@MODEL_REGISTRY.register()
class DASRModel(OnTheFlyDegradationMixin, SRGANDynamicModel):
    """``SRGANDynamicModel`` on GT degraded on the fly in DASR's degradation spaces.

    Each batch: pick one space (``degree_list`` / ``degree_prob``), USM-sharpen the GT, degrade it
    into the LQ and its normalised parameter vector, crop ``gt_size``, and pass (lq, gt, params)
    through the training-pair pool together. Every loss and the discriminator use the sharpened GT,
    as in DASR, so ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm`` have no effect here.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.setup_degradation()
        if self.is_train and self.num_views > 1:
            raise ValueError(f'a regularizer needs {self.num_views} views of each GT, which DASRModel does not make; '
                             'use it with RealESRNetModel / RealESRGANModel')
        ignored = [k for k in _GT_USM_KEYS if k in opt]
        if self.is_train and ignored:
            logger.info('DASRModel sharpens the GT for every loss and the discriminator, as DASR does: %s ignored.',
                        ', '.join(ignored))

    def build_degradation(self, opt, train_opt):
        return DASRDegradation(opt, train_opt, opt['scale'])

    def feed_data(self, data):
        if not (self.is_train and self.degradation is not None):
            return super().feed_data(data)  # validation, or paired data (high_order_degradation: false)
        with torch.no_grad():
            gt = self.usm_sharpener(data['gt'].to(self.device, non_blocking=True))
            lq, params = self.degradation(gt, self.degradation_generator)
            self.degradation_space = self.degradation.last_space
            pair = self.crop_and_pool(lq, gt, params=params)
        self.lq, self.gt, self.degradation_params = pair['lq'].contiguous(), pair['gt'], pair['params']
