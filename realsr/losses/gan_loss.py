"""Adversarial losses (BasicSR ``GANLoss`` / ``MultiScaleGANLoss``).

vanilla: Goodfellow et al., 2014; lsgan: Mao et al., ICCV 2017; wgan: Arjovsky et al., 2017;
wgan_softplus: the logistic / non-saturating loss of StyleGAN2 (Karras et al., CVPR 2020);
hinge: Lim & Ye, 2017 / Miyato et al., ICLR 2018.
"""
from torch import nn
from torch.nn import functional as F

from realsr.registry import LOSS_REGISTRY

GAN_TYPES = ('vanilla', 'lsgan', 'wgan', 'wgan_softplus', 'hinge')


@LOSS_REGISTRY.register()
class GANLoss(nn.Module):
    """``forward(input, target_is_real, is_disc=False)`` on discriminator logits.

    - vanilla: BCE-with-logits against a constant target (real_label_val / fake_label_val).
    - lsgan: mean squared error against the same constant target.
    - wgan: ``-mean(x)`` for real, ``mean(x)`` for fake.
    - wgan_softplus: ``mean(softplus(-x))`` for real, ``mean(softplus(x))`` for fake.
    - hinge: discriminator ``mean(relu(1 - x))`` for real, ``mean(relu(1 + x))`` for fake;
      generator ``-mean(x)`` (target_is_real ignored).

    ``loss_weight`` multiplies the generator loss only (``is_disc=False``); the discriminator
    loss is never scaled.
    """

    def __init__(self, gan_type, real_label_val=1.0, fake_label_val=0.0, loss_weight=1.0):
        super().__init__()
        if gan_type not in GAN_TYPES:
            raise ValueError(f'GANLoss: unknown gan_type {gan_type!r}; valid types: {", ".join(GAN_TYPES)}.')
        self.gan_type = gan_type
        self.real_label_val = real_label_val
        self.fake_label_val = fake_label_val
        self.loss_weight = loss_weight

    def _target(self, input, target_is_real):
        value = self.real_label_val if target_is_real else self.fake_label_val
        return input.new_full(input.shape, value)

    def _loss(self, input, target_is_real, is_disc):
        if self.gan_type == 'vanilla':
            return F.binary_cross_entropy_with_logits(input, self._target(input, target_is_real))
        if self.gan_type == 'lsgan':
            return F.mse_loss(input, self._target(input, target_is_real))
        if self.gan_type == 'wgan':
            return -input.mean() if target_is_real else input.mean()
        if self.gan_type == 'wgan_softplus':
            return F.softplus(-input).mean() if target_is_real else F.softplus(input).mean()
        # hinge
        if is_disc:
            return F.relu(1 - input).mean() if target_is_real else F.relu(1 + input).mean()
        return -input.mean()

    def forward(self, input, target_is_real, is_disc=False):
        loss = self._loss(input, target_is_real, is_disc)
        return loss if is_disc else loss * self.loss_weight


@LOSS_REGISTRY.register()
class MultiScaleGANLoss(GANLoss):
    """GANLoss over a list of predictions (one per scale), averaged. An item that is itself a
    list (multi-scale feature matching) contributes only its last tensor. A single tensor is
    handled as by :class:`GANLoss`."""

    def forward(self, input, target_is_real, is_disc=False):
        if not isinstance(input, list):
            return super().forward(input, target_is_real, is_disc)
        total = 0
        for pred in input:
            if isinstance(pred, list):
                pred = pred[-1]
            total = total + super().forward(pred, target_is_real, is_disc).mean()
        return total / len(input)
