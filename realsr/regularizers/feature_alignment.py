"""Feature-statistics alignment between two degraded views of each GT (Simple-Align, CVPR 2024).

The model degrades every GT patch twice, independently, and puts the two views one after the
other in the batch, ``[view 1; view 2]`` (``num_views = 2``; RealESRNetModel and
RealESRGANModel do this through the same degradation pipeline, without the training-pair pool).
:class:`FeatureAlignment` reads the features at its site (by default those entering
``conv_last``, i.e. ``lrelu(conv_hr(.))`` of SRResNet/RRDBNet), leaves them unchanged, and
returns a loss that pulls the statistics of the two views together.

With B pairs, C channels and ``f = GAP(features)`` split into ``f_A = f[:B]``, ``f_B = f[B:]``,
each half centred over its own batch (``f_A - mean_b f_A``), for pair b with ``u = f_A[b]``,
``v = f_B[b]``::

    reg(u, v) = mean_c (u_c - v_c)^2 + mean_{c,c'} (u_c u_c' - v_c v_c')^2
    l_align     = weight * SUM_b reg(u_b, v_b)
    l_align_rff = weight * SUM_b reg(phi_b(u_b), phi_b(v_b))

``phi_b`` is a random Fourier feature map drawn afresh for every pair: ``w ~ N(0, 1/sigma^2)``
(one scalar per frequency, ``rff_features`` of them, 1 in the reference) and phases
``beta_c ~ U(0, 2 pi)`` (one per channel and frequency), shared by u and v. For each row
x in {u, v}: ``m_c = x_c w + beta_c``; ``m <- (m - min_c m) / max_c (m - min_c m) * pi/2``
(per row and frequency); ``phi(x) = sqrt(2 / rff_features) * (cos m + sin m)``, flattened to a
vector of C * rff_features values. ``reduction: mean`` divides both sums by B.
"""
import logging
import math

import numpy as np
import torch

from realsr.registry import REGULARIZER_REGISTRY
from realsr.regularizers.base import Regularizer

logger = logging.getLogger('realsr')

_SEED_TAG = 0x5A11  # keeps this stream apart from the other streams derived from the same seed


# -------------------------------------------------------------------------------------------
# the loss, as functions of tensors (the class below only captures the features)
# -------------------------------------------------------------------------------------------
def pooled_centred_views(features):
    """(2B, C, ...) features -> the two views' pooled features (B, C) each, every half centred
    over its own batch. Pools in float32 whatever the features' dtype (AMP)."""
    if features.dim() < 2:
        raise ValueError(f'FeatureAlignment needs (N, C, ...) features, got shape {tuple(features.shape)}')
    pooled = features.float().flatten(2).mean(2) if features.dim() > 2 else features.float()
    batch = pooled.size(0) // 2
    f_a, f_b = pooled[:batch], pooled[batch:]
    return f_a - f_a.mean(0, keepdim=True), f_b - f_b.mean(0, keepdim=True)


def pair_statistics_gap(u, v):
    """reg(u_b, v_b) for every pair: the mean squared difference of the vectors plus that of
    their outer products. u, v: (B, D). Returns (B,)."""
    first = (u - v).pow(2).mean(1)
    second = (u.unsqueeze(2) * u.unsqueeze(1) - v.unsqueeze(2) * v.unsqueeze(1)).pow(2).flatten(1).mean(1)
    return first + second


def random_fourier_features(x, w, beta):
    """The reference's RFF map (its ``sum=True`` form) applied per pair.

    x: (B, R, C) rows to map (R = 2: u and v), w: (B, F) frequencies, beta: (B, C, F) phases.
    Returns (B, R, C * F). Rows of one pair share w and beta; the min/max normalisation is per
    row and frequency, over the channels."""
    m = x.unsqueeze(3) * w[:, None, None, :] + beta[:, None, :, :]  # (B, R, C, F)
    m = m - m.amin(2, keepdim=True)
    # The reference divides by the range as it is; the floor only avoids 0/0 when every
    # channel has the same value (e.g. C = 1), where the reference would give NaN.
    m = m / m.amax(2, keepdim=True).clamp_min(torch.finfo(m.dtype).tiny) * (math.pi / 2)
    z = math.sqrt(2.0 / w.size(1)) * (torch.cos(m) + torch.sin(m))
    return z.flatten(2)


def simple_align_terms(features, w=None, beta=None, reduction='sum'):
    """The two unweighted terms ``(statistics, rff)`` of Simple-Align for features of a
    ``[view 1; view 2]`` batch. ``w`` (B, F) and ``beta`` (B, C, F) are the RFF draws, one set
    per pair; without them the RFF term is None."""
    if reduction not in ('sum', 'mean'):
        raise ValueError(f"FeatureAlignment reduction must be 'sum' (the reference) or 'mean', got {reduction!r}")
    u, v = pooled_centred_views(features)
    reduce = torch.sum if reduction == 'sum' else torch.mean
    stats = reduce(pair_statistics_gap(u, v))
    if w is None:
        return stats, None
    z = random_fourier_features(torch.stack([u, v], 1), w.to(u), beta.to(u))
    return stats, reduce(pair_statistics_gap(z[:, 0], z[:, 1]))


# -------------------------------------------------------------------------------------------
# the regularizer
# -------------------------------------------------------------------------------------------
@REGULARIZER_REGISTRY.register()
class FeatureAlignment(Regularizer):
    """Simple-Align: align pooled first- and second-order feature statistics of two degraded
    views of each GT, directly and after random Fourier features (see the module docstring).

    Args:
        weight: the strength lambda (the reference's top-level ``weight``, 1 in its file).
        sites: where to read the features (default ``conv_last:input``, the features after
            ``lrelu(conv_hr)``). With several modules the losses of all are added.
        rff_features: frequencies of the random Fourier features (the reference's
            ``num_f = 1``); 0 leaves the RFF term out.
        rff_sigma: the frequencies are drawn from N(0, 1/rff_sigma^2) (the reference's sigma = 1).
        reduction: ``sum`` over the B pairs, as the reference does (the loss then grows with
            the batch size), or ``mean``, which divides it by B.
        seed: seeds the RFF stream (see below).
        loss_name: the logged names are ``<loss_name>`` (statistics) and
            ``<loss_name>_rff`` (the RFF term).

    Settled ambiguities (spec section 4(f)), with the reason:

    * The second-order statistic is the per-sample outer product of the batch-centred pooled
      features (a C x C matrix per view), not a spatial covariance: that is what the released
      code computes, and the code, not the paper's wording, is what the results come from.
    * Centring is over each view's own half of the batch, so with B = 1 both centred vectors
      are zero and the loss is 0: use B >= 2 (the reference trains with B = 8).
    * The loss is summed over pairs by default (the reference); ``reduction: mean`` is offered
      for comparing batch sizes. ``weight`` multiplies both terms.
    * The RFF draws are fresh for every pair and every step, as in the reference, but they come
      from a dedicated ``torch.Generator`` on the CPU that :meth:`set_iteration` re-seeds from
      ``(seed, iteration)`` in closed form, instead of the global RNG: the global RNG stream
      (dropout, data order) is left untouched, the draws do not depend on the device, and a
      resumed run draws exactly what an uninterrupted run draws at the same iteration, without
      anything extra in the training state.
    * Nothing is detached (gradients flow through both views and the RFF map, min/max
      included), as in the reference. The range division of the RFF map is floored at the
      smallest positive float, which changes nothing unless the range is exactly 0.
    * The features are pooled in float32.

    Needs ``num_views = 2``: the batch must be ``[view 1; view 2]``. An odd batch raises an
    error; a model that does not synthesise the views (SRModel on paired data, or
    ``high_order_degradation: false``) cannot be told apart from inside the regularizer when
    its batch is even, so use it with RealESRNetModel / RealESRGANModel.
    """

    num_views = 2

    def __init__(self, weight=1.0, sites=None, rff_features=1, rff_sigma=1.0, reduction='sum', seed=0,
                 loss_name='l_align'):
        super().__init__(sites)
        if reduction not in ('sum', 'mean'):
            raise ValueError(f"FeatureAlignment reduction must be 'sum' (the reference) or 'mean', got {reduction!r}")
        if int(rff_features) < 0:
            raise ValueError(f'FeatureAlignment rff_features must be >= 0, got {rff_features}')
        if float(rff_sigma) <= 0:
            raise ValueError(f'FeatureAlignment rff_sigma must be > 0, got {rff_sigma}')
        self.weight = float(weight)  # float(): the reference's '1e0' is a string to PyYAML
        self.rff_features = int(rff_features)
        self.rff_sigma = float(rff_sigma)
        self.reduction = reduction
        self.seed = int(seed)
        self.loss_name = loss_name
        self.generator = torch.Generator()
        self.iteration = None
        self.set_iteration(0)
        self._features = {}  # attached-site index -> features of the last forward pass

    # -- random Fourier feature draws --------------------------------------------------------
    def rff_seed(self, iteration):
        """The generator's seed at ``iteration``: a hash of (seed, iteration), closed form."""
        return int(np.random.SeedSequence([self.seed, int(iteration), _SEED_TAG]).generate_state(1, np.uint64)[0])

    def set_iteration(self, current_iter):
        self.iteration = int(current_iter)
        self.generator.manual_seed(self.rff_seed(self.iteration))

    def draw_rff(self, batch, channels):
        """Fresh RFF parameters for ``batch`` pairs: w (B, F) ~ N(0, 1/sigma^2) and
        beta (B, C, F) ~ U(0, 2 pi), from the dedicated generator (CPU, float32)."""
        w = torch.randn(batch, self.rff_features, generator=self.generator) / self.rff_sigma
        beta = torch.rand(batch, channels, self.rff_features, generator=self.generator) * (2 * math.pi)
        return w, beta

    # -- the hook and the loss -----------------------------------------------------------------
    def apply(self, x, index, name):
        self._features[index] = x  # kept with its graph, so the loss trains the network
        return x

    def losses(self):
        if not self._features:
            return {}
        features, self._features = self._features, {}
        stats_total, rff_total = 0, 0
        for index, feat in sorted(features.items()):
            if feat.size(0) % 2:
                site = self.attached[index][1] if index < len(self.attached) else index
                raise ValueError(
                    f'FeatureAlignment needs two independently degraded views of each GT in the batch '
                    f'([view 1; view 2], so an even batch), but the features at {site} have batch {feat.size(0)}. '
                    'The model must provide the two views: RealESRNetModel and RealESRGANModel do when they '
                    'degrade on the fly (num_views = 2); SRModel on paired data does not.')
            if feat.size(0) < 4:
                logger.debug('FeatureAlignment with one pair: the batch-centred features are 0, so is the loss.')
            draws = self.draw_rff(feat.size(0) // 2, feat.size(1)) if self.rff_features else (None, None)
            stats, rff = simple_align_terms(feat, *draws, reduction=self.reduction)
            stats_total = stats_total + stats
            if rff is not None:
                rff_total = rff_total + rff
        out = {self.loss_name: self.weight * stats_total}
        if self.rff_features:
            out[f'{self.loss_name}_rff'] = self.weight * rff_total
        return out

    def __repr__(self):
        return (f'{type(self).__name__}(weight={self.weight}, sites={self.sites}, rff_features={self.rff_features}, '
                f'rff_sigma={self.rff_sigma}, reduction={self.reduction!r})')
