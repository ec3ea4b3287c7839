"""Real-ESRNet and Real-ESRGAN: SR trained on GT images degraded on the fly, on the model's
device, by the second-order pipeline (:mod:`realsr.degradations.pipeline`).

Option keys are Real-ESRGAN's: the pipeline's at the top level (``resize_prob`` ...,
``gt_size``, ``queue_size``, ``high_order_degradation``), the kernels' in ``datasets.train``.
RealESRNetModel sharpens the GT first when ``gt_usm`` is true; RealESRGANModel degrades the
sharpened GT and picks the targets of each loss with ``l1_gt_usm``/``percep_gt_usm``/
``gan_gt_usm``. The degradation generator and the training-pair pool are saved in the
training state, so a resumed run continues exactly. With ``per_sample: true`` every degradation
choice is drawn per sample, so the pool is off unless ``queue_size`` is set explicitly.
"""
import logging
from collections import OrderedDict

import numpy as np
import torch

from realsr import option_defs as defs
from realsr.archs import build_network
from realsr.data.loader import gpus_per_process
from realsr.degradations.pair_pool import TrainingPairPool
from realsr.degradations.pipeline import SecondOrderDegradation, paired_random_crop_batch
from realsr.degradations.usm import USMSharp
from realsr.losses import build_loss
from realsr.models.sr_model import SRModel
from realsr.registry import MODEL_REGISTRY

logger = logging.getLogger('realsr')


def pair_pool_size(opt):
    """The training-pair pool size: ``queue_size`` (default 180). With ``per_sample: true`` the
    pool has nothing left to mix, so it is disabled (size 0, logged) unless ``queue_size`` is
    given explicitly."""
    if defs.value(opt, defs.TOP_LEVEL, 'per_sample') and opt.get('queue_size') is None:
        logger.info('per_sample: true draws every degradation choice per sample, so the training-pair pool '
                    'is not needed and is disabled (set queue_size to use one anyway).')
        return 0
    return defs.value(opt, defs.TOP_LEVEL, 'queue_size')


def _seed_of(opt):
    """``manual_seed``: parse_options draws one when the file has none; options built in code
    without it seed the degradation stream with 0."""
    return int(opt.get('manual_seed') or 0)


class OnTheFlyDegradationMixin:
    """Turns a batch of GT crops into (LQ, GT) training pairs on the model's device."""

    def setup_degradation(self):
        opt = self.opt
        self.usm_sharpener = USMSharp().to(self.device)
        self.high_order_degradation = defs.value(opt, defs.TOP_LEVEL, 'high_order_degradation')
        # read once here, not in the per-iteration feed_data / optimize_parameters
        self.usm_targets = {k: bool(defs.value(opt, defs.TOP_LEVEL, k))
                            for k in ('gt_usm', 'l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm')}
        self.degradation = None
        if not (self.is_train and self.high_order_degradation):
            return
        train_opt = opt['datasets']['train']
        self.degradation = self.build_degradation(opt, train_opt).to(self.device)
        batch = train_opt['batch_size_per_gpu'] * gpus_per_process(opt.get('num_gpu'), opt.get('dist'))
        self.pair_pool = TrainingPairPool(pair_pool_size(opt), batch)
        self.gt_size = opt.get('gt_size', train_opt.get('gt_size'))
        if self.gt_size is None:
            raise ValueError("'gt_size' (top level, as in Real-ESRGAN's files) is needed to crop the training pairs")
        crop_pad_size = defs.value(train_opt, defs.REALESRGAN_DATASET, 'crop_pad_size')
        if self.gt_size > crop_pad_size:
            raise ValueError(f'gt_size {self.gt_size} is larger than datasets.train.crop_pad_size {crop_pad_size} '
                             '(Real-ESRGAN hard-codes 400): raise crop_pad_size or lower gt_size')
        # Its own stream, apart from the global RNG (dropout etc.), seeded by seed and rank.
        seed = int(np.random.SeedSequence([_seed_of(opt), defs.value(opt, defs.TOP_LEVEL, 'rank'),
                                           0xDE6]).generate_state(1)[0])
        self.degradation_generator = torch.Generator(device=self.device)
        self.degradation_generator.manual_seed(seed)

    def build_degradation(self, opt, train_opt):
        """The on-device degradation module (DASR's models plug in their degradation spaces)."""
        ignored = [k for k in ('blur_kernel_size', 'blur_kernel_size2') if train_opt.get(k) is not None]
        if ignored:  # Real-ESRGAN's files carry them; its dataset draws sizes from a fixed 7..21 list
            logger.info('datasets.train.%s ignored, as in Real-ESRGAN: kernel sizes come from kernel_range, '
                        'kernel_range2 and final_kernel_range (default 7..21).', ' and '.join(ignored))
        return SecondOrderDegradation(opt, train_opt, opt['scale'])

    @torch.no_grad()
    def crop_and_pool(self, lq, gt, **aligned):
        """Crop the same window of ``lq`` and ``gt`` and pass them, with any per-sample tensors in
        ``aligned`` (e.g. degradation parameters), through the pool, which keeps them together.
        Returns the dict to train on (keys 'lq', 'gt' and those of ``aligned``)."""
        g = self.degradation_generator
        (gt, ), lq = paired_random_crop_batch([gt], lq, self.gt_size, self.opt['scale'], g)
        return self.pair_pool({'lq': lq, 'gt': gt, **aligned}, g)

    @torch.no_grad()
    def synthesize_pairs(self, gt, degrade_from=None):
        """Degrade ``degrade_from`` (default ``gt``), crop the same window of the LQ and ``gt``,
        and pass the pair through the pool. Returns (lq, gt)."""
        g = self.degradation_generator
        source = gt if degrade_from is None else degrade_from
        views = getattr(self, 'num_views', 1)
        if views > 1:
            # [view 1; view 2; ...]: independent degradations of the same GT crops, for
            # regularizers that compare them (Simple-Align); no pool, as in that method
            lq = torch.cat([self.degradation(source, g) for _ in range(views)])
            (gt, ), lq = paired_random_crop_batch([gt.repeat(views, 1, 1, 1)], lq, self.gt_size, self.opt['scale'], g)
            return lq.contiguous(), gt
        pair = self.crop_and_pool(self.degradation(source, g), gt)
        return pair['lq'].contiguous(), pair['gt']

    def extra_training_state(self):
        if self.degradation is None:
            return {}
        return {'degradation_generator': self.degradation_generator.get_state(),
                'pair_pool': self.pair_pool.state_dict()}

    def load_extra_training_state(self, state):
        """Restore the degradation generator and the pool. A generator state saved on another
        device type (a CUDA state is 16 bytes, a CPU one 5,056) cannot be loaded: the stream is
        then reseeded from (manual_seed, rank, resume iteration), with a warning, and the pool
        is still moved onto this run's device."""
        if self.degradation is None:
            return
        if 'degradation_generator' not in state:
            logger.warning('The training state has no degradation generator or pool (written by BasicSR?): '
                           'they start afresh.')
            return
        saved = state['degradation_generator']
        current = self.degradation_generator.get_state()
        reason = None
        if not torch.is_tensor(saved) or saved.numel() != current.numel():
            size = f'{saved.numel()} bytes' if torch.is_tensor(saved) else f'a {type(saved).__name__}'
            reason = (f'the device type changed: the saved state ({size}) was written by a generator on '
                      f"another device type than this run's {self.device.type} generator ({current.numel()} bytes), "
                      'e.g. a GPU run resumed on the CPU or the reverse')
        else:
            try:
                self.degradation_generator.set_state(saved.cpu())
            except (RuntimeError, TypeError, ValueError) as err:
                reason = f'its saved state could not be loaded ({err})'
        if reason is not None:
            opt = self.opt
            iteration = int(state.get('iter', 0) or 0)
            seed = int(np.random.SeedSequence([_seed_of(opt), defs.value(opt, defs.TOP_LEVEL, 'rank'), 0xDE6,
                                               iteration]).generate_state(1)[0])
            self.degradation_generator.manual_seed(seed)
            logger.warning('Degradation generator: %s. The degradation stream is reseeded (seed %d, from '
                           'manual_seed, rank and resume iteration %d), so the resumed run is not bit-identical '
                           'to an uninterrupted one.', reason, seed, iteration)
        if 'pair_pool' in state:
            self.pair_pool.load_state_dict(state['pair_pool'], self.device)
        else:
            logger.warning('The training state has no training-pair pool: it starts empty.')


@MODEL_REGISTRY.register()
class RealESRNetModel(OnTheFlyDegradationMixin, SRModel):
    """SRModel on on-the-fly degraded pairs (pixel loss, optionally perceptual)."""

    def __init__(self, opt):
        super().__init__(opt)
        self.setup_degradation()

    def feed_data(self, data):
        if self.is_train and self.high_order_degradation and self.degradation is not None:
            gt = data['gt'].to(self.device, non_blocking=True)
            if self.usm_targets['gt_usm']:
                gt = self.usm_sharpener(gt)
            self.lq, self.gt = self.synthesize_pairs(gt)
        else:  # validation, or paired fine-tuning (high_order_degradation: false)
            super().feed_data(data)


class DiscriminatorMixin:
    """The discriminator ``net_d`` (``network_d``), the GAN loss and the discriminator step,
    shared by the GAN models (Real-ESRGAN, DASR)."""

    def setup_discriminator(self):
        train_opt = self.opt['train']
        self.net_d = self.model_to_device(build_network(self.opt['network_d']), compile_net=True)
        self.print_network(self.net_d)
        self.load_pretrained(self.net_d, 'd')
        self.net_d.train()
        self.cri_gan = build_loss(train_opt['gan_opt']).to(self.device) if train_opt.get('gan_opt') else None
        self.net_d_iters = train_opt['net_d_iters']  # defaults: realsr/option_defs.py
        self.net_d_init_iters = train_opt['net_d_init_iters']

    def setup_optimizer_d(self):
        self.optimizer_d = self.get_optimizer(self.opt['train']['optim_d'], self.net_d.parameters())
        self.optimizers.append(self.optimizer_d)
        self.train_step.add_group('d', [self.net_d], self.optimizer_d)

    def generator_step_due(self, current_iter):
        """The generator is updated every ``net_d_iters`` iterations after ``net_d_init_iters``."""
        return current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters

    def set_discriminator_trainable(self, trainable):
        for p in self.net_d.parameters():
            p.requires_grad = trainable

    def discriminator_step(self, step, real, fake, loss_dict):
        """The discriminator's losses on ``real`` and ``fake`` (detached here) and their backward,
        in the shared step ``step``; logs into ``loss_dict``."""
        self.set_discriminator_trainable(True)
        # real and fake in separate backward passes (as the reference, for DDP)
        real_d_pred = step.forward(self.net_d, real)
        l_d_real = self.cri_gan(real_d_pred, True, is_disc=True)
        step.backward('d', l_d_real, {'l_d_real': l_d_real})
        fake_d_pred = step.forward(self.net_d, fake.detach().clone())
        l_d_fake = self.cri_gan(fake_d_pred, False, is_disc=True)
        step.backward('d', l_d_fake, {'l_d_fake': l_d_fake})
        loss_dict.update(l_d_real=l_d_real, out_d_real=real_d_pred.detach().mean(), l_d_fake=l_d_fake,
                         out_d_fake=fake_d_pred.detach().mean())


@MODEL_REGISTRY.register()
class RealESRGANModel(DiscriminatorMixin, OnTheFlyDegradationMixin, SRModel):
    """Generator + U-Net discriminator (``network_d``) with pixel, perceptual and GAN losses."""

    def __init__(self, opt):
        super().__init__(opt)
        self.setup_degradation()

    def init_training_settings(self):
        self.setup_discriminator()
        super().init_training_settings()  # net_g, EMA, pixel/perceptual losses, optimizers

    def setup_optimizers(self):
        super().setup_optimizers()
        self.setup_optimizer_d()

    def feed_data(self, data):
        if self.is_train and self.high_order_degradation and self.degradation is not None:
            gt = data['gt'].to(self.device, non_blocking=True)
            # the LQ comes from the sharpened GT; the pool keeps the plain GT, re-sharpened after
            self.lq, self.gt = self.synthesize_pairs(gt, degrade_from=self.usm_sharpener(gt))
            self.gt_usm = self.usm_sharpener(self.gt)
        else:  # validation, or paired fine-tuning: the sharpened GT is made when a step needs it
            super().feed_data(data)
            self.gt_usm = None

    def optimize_parameters(self, current_iter):
        self.set_iteration(current_iter)
        if self.gt_usm is None:
            self.gt_usm = self.usm_sharpener(self.gt)
        l1_gt = self.gt_usm if self.usm_targets['l1_gt_usm'] else self.gt
        percep_gt = self.gt_usm if self.usm_targets['percep_gt_usm'] else self.gt
        gan_gt = self.gt_usm if self.usm_targets['gan_gt_usm'] else self.gt
        g_due = self.generator_step_due(current_iter)
        with self.train_step.micro_batch() as step:
            self.set_discriminator_trainable(False)
            with torch.set_grad_enabled(g_due):  # no graph kept when only D trains on the output
                self.output = step.forward(self.net_g, self.lq)
            loss_dict = OrderedDict()
            if g_due:
                l_g_total = self.regularizer_losses(current_iter, loss_dict)
                l_g_total = l_g_total + self.content_losses(self.output, l1_gt, percep_gt, loss_dict, prefix='l_g_')
                if self.cri_gan is not None:
                    loss_dict['l_g_gan'] = self.cri_gan(step.forward(self.net_d, self.output), True, is_disc=False)
                    l_g_total = l_g_total + loss_dict['l_g_gan']
                step.backward('g', l_g_total, loss_dict)
            self.discriminator_step(step, gan_gt, self.output, loss_dict)
            step.log(loss_dict)

    def save(self, epoch, current_iter, extra_state=None, rank_state=None):
        self.save_network(self.net_d, 'net_d', current_iter)
        super().save(epoch, current_iter, extra_state, rank_state)  # net_g (+ EMA), then the training state
