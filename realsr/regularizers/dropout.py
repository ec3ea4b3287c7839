"""Dropout regularizers: channel dropout before the last conv (Reflash Dropout) and the scheduled
dropout mixing of Adaptive Dropout.

* :class:`ChannelDropout` -- Kong et al., "Reflash Dropout in Image Super-Resolution", CVPR 2022:
  ``Dropout2d`` (or element-wise ``Dropout``) on the features entering ``conv_last``.
* :class:`AdaptiveDropout` -- Xu et al., "Adaptive Dropout: Unleashing Dropout across Layers for
  Generalizable Image Super-Resolution", CVPR 2025: inside every residual block and before
  ``conv_last`` the features ``y`` become ``p_k * y + (1 - p_k) * Dropout2d_q(y)``, and the mixing
  is switched off site by site as training goes on.

Both are parameter-free (checkpoint keys unchanged) and act only in training mode; in eval mode
the network is exactly the plain arch. Masks are drawn with torch's functional dropout, so they use
the global RNG the same way ``nn.Dropout2d`` / ``nn.Dropout`` modules would.
"""
import numbers
import re

from torch.nn import functional as F

from realsr.regularizers.base import Regularizer, resolve_sites
from realsr.registry import REGULARIZER_REGISTRY


def _probability(owner, name, value, upper_inclusive=False):
    """``value`` as a float in [0, 1) (or [0, 1]); a clear error otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{owner}: {name} must be a number, got {value!r}')
    value = float(value)
    ok = 0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0
    if not ok:
        interval = '[0, 1]' if upper_inclusive else '[0, 1) (1 would drop everything)'
        raise ValueError(f'{owner}: {name} must be in {interval}, got {value}')
    return value


def _channel_dropout(x, p, owner, name):
    """``Dropout2d`` semantics on (B, C, H, W) features: each (sample, channel) map is zeroed
    with probability ``p``, the others are scaled by 1 / (1 - p)."""
    if x.dim() != 4:
        raise ValueError(f"{owner}: channel dropout needs (B, C, H, W) features, but the site at '{name}' "
                         f'gives shape {tuple(x.shape)}; choose a site with 4-D features or mode: element')
    return F.dropout2d(x, p, training=True)


_DIGITS = re.compile(r'(\d+)')


def _natural_key(name):
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(name))


def _in_numeric_order(resolved):
    """Matches of one site in forward order: names that differ only in their numbers (``body2``,
    ``body10``) are put in numeric order; the relative order of other names (``named_modules``
    order, i.e. creation order) is kept."""
    groups = {}
    for i, item in enumerate(resolved):
        groups.setdefault(_DIGITS.sub('#', item[1]), []).append(i)
    ordered = list(resolved)
    for slots in groups.values():
        items = sorted((resolved[i] for i in slots), key=lambda item: _natural_key(item[1]))
        for slot, item in zip(slots, items):
            ordered[slot] = item
    return ordered


@REGULARIZER_REGISTRY.register()
class ChannelDropout(Regularizer):
    """Reflash Dropout: dropout on the features at ``sites`` (default: entering ``conv_last``).

    In training mode, ``mode: channel`` zeroes each (sample, channel) feature map with probability
    ``p`` and scales the kept ones by ``1 / (1 - p)`` (``nn.Dropout2d``); ``mode: element`` does the
    same per element (``nn.Dropout``). Identity in eval mode; no parameters.

    The paper's settings: p 0.7 for Real-SRResNet, 0.5 for Real-RRDB, channel mode, one site
    before ``conv_last`` (after ``lrelu(conv_hr(.))``).

    Args:
        p (float): drop probability, in [0, 1). p = 0 is the identity.
        mode (str): ``'channel'`` (Dropout2d, needs 4-D features) or ``'element'`` (Dropout).
        sites (list[str]): where to act (see :mod:`realsr.regularizers.base`).
    """

    MODES = ('channel', 'element')

    def __init__(self, p=0.5, mode='channel', sites=('conv_last:input', )):
        super().__init__(sites)
        self.p = _probability('ChannelDropout', 'p', p)
        if mode not in self.MODES:
            raise ValueError(f"ChannelDropout: mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode

    def apply(self, x, index, name):
        if self.p == 0:
            return x
        if self.mode == 'channel':
            return _channel_dropout(x, self.p, 'ChannelDropout', name)
        return F.dropout(x, self.p, training=True)

    def __repr__(self):
        return f'ChannelDropout(p={self.p}, mode={self.mode!r}, sites={self.sites})'


@REGULARIZER_REGISTRY.register()
class AdaptiveDropout(Regularizer):
    """Adaptive Dropout (CVPR 2025), as its released code trains.

    At attached site k (k = 0, 1, ..., in forward order) the features y become

        z = p_k * y + (1 - p_k) * Dropout2d_q(y)

    (E[z] = y). Every mixing weight starts at ``p_init``; site k is switched off (p_k = 1, the
    site is then the identity and draws no mask) from training iteration ``step * (k + 1)`` on.
    With the defaults and 17 sites: site 0 mixes during iterations 1..19,999 and is off from
    20,000; the last site (before ``conv_last``) is off from 340,000 on.
    The reference sets ``plist[it // 20000 - 1] = 1.0`` whenever ``it % 20000 == 0`` (``it``
    counted from 1 and incremented before the step), which is this closed form.

    The schedule is computed in closed form from the iteration given to :meth:`set_iteration`, so
    a resumed run continues exactly. (The reference keeps the list in its training loop and
    re-creates it with every entry at 0.3 when a run is resumed, so sites switched off before the
    resume point mix again until the next multiple of 20,000 -- a bug not reproduced here.)

    Default sites: the residual blocks' ``conv1`` outputs (inside the residual branch, before
    the ReLU) plus ``conv_last:input``: ``body{K}.0.conv1`` (K = 1..N, ``MSRResNet_details``) or
    ``body.{i}.conv1`` (``MSRResNet``). Other archs need explicit ``sites``; the matches of each
    site are taken in numeric order (``body2`` before ``body10``), sites in the order given.

    The paper's "adaptive integration" gate (learned per-channel p) is commented out in the
    released code; the scheduled scalar p is what is implemented.

    Args:
        q (float): Dropout2d drop probability, in [0, 1). Reference: 0.5.
        p_init (float): mixing weight of every site until it is switched off, in [0, 1].
            Reference: 0.3 (p_init = 1 means no dropout).
        step (int): iterations between two switch-offs. Reference: 20000.
        n_layers (int | None): number of sites the schedule runs over (reference: 17). None: the
            number of attached sites; if given it must equal that number (a check).
        sites (list[str] | None): where to act; None = the default above.
    """

    def __init__(self, q=0.5, p_init=0.3, step=20000, n_layers=None, sites=None):
        super().__init__(sites if sites is not None else [])
        self.custom_sites = sites is not None
        self.q = _probability('AdaptiveDropout', 'q', q)
        self.p_init = _probability('AdaptiveDropout', 'p_init', p_init, upper_inclusive=True)
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or step != int(step) or step < 1:
            raise ValueError(f'AdaptiveDropout: step must be a positive whole number of iterations, got {step!r}')
        self.step = int(step)
        if n_layers is not None and (isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral)
                                     or n_layers < 1):
            raise ValueError(f'AdaptiveDropout: n_layers must be a positive integer or None, got {n_layers!r}')
        self.n_layers = n_layers
        self.num_sites = 0
        self.current_iter = 0

    # -- sites ------------------------------------------------------------------------------
    @staticmethod
    def default_sites_for(net):
        """The default site list for ``net``: its residual blocks' conv1 outputs, then the input
        of conv_last. Raises ValueError for archs without either body layout."""
        names = [n for n, _ in net.named_modules()]
        for pattern, site in ((r'body(\d+)\.0\.conv1', 'body{}.0.conv1:output'),
                              (r'body\.(\d+)\.conv1', 'body.{}.conv1:output')):
            found = sorted(int(m.group(1)) for m in (re.fullmatch(pattern, n) for n in names) if m)
            if found and 'conv_last' in names:
                return [site.format(i) for i in found] + ['conv_last:input']
        leaves = [n for n, m in net.named_modules() if n and not list(m.children())]
        raise ValueError(
            f'AdaptiveDropout: no default sites for {type(net).__name__}: they need residual blocks '
            "'body{K}.0.conv1' (MSRResNet_details) or 'body.{i}.conv1' (MSRResNet) and a 'conv_last'. "
            "Pass sites explicitly, e.g. sites: ['body.*.rdb1.conv1:output', 'conv_last:input']. "
            f"Its modules include: {', '.join(leaves[:30])}" + (' ...' if len(leaves) > 30 else ''))

    def attach(self, net):
        if not self.custom_sites:
            self.sites = self.default_sites_for(net)
        resolved = []
        for site in self.sites:  # sites in the order given, the matches of each in numeric order
            resolved += _in_numeric_order(resolve_sites(net, [site]))
        if self.n_layers is not None and self.n_layers != len(resolved):
            raise ValueError(f'AdaptiveDropout: n_layers={self.n_layers} but the sites match {len(resolved)} '
                             f"modules of {type(net).__name__} ({', '.join(n for _, n, _, _ in resolved)}); "
                             'leave n_layers out or make the two agree')
        for index, (site, name, module, side) in enumerate(resolved):
            self.attached.append((site, name, side))
            if side == 'input':
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(index, name)))
            else:
                self._handles.append(module.register_forward_hook(self._post_hook(index, name)))
        self.num_sites = max(self.num_sites, len(resolved))
        return self

    # -- schedule ---------------------------------------------------------------------------
    def p_at(self, index, current_iter):
        """Mixing weight of site ``index`` (0-based, forward order) at training iteration
        ``current_iter`` (counted from 1, as the training loop passes it)."""
        return 1.0 if current_iter >= self.step * (index + 1) else self.p_init

    def set_iteration(self, current_iter):
        self.current_iter = int(current_iter)

    @property
    def p_list(self):
        """The mixing weights of all attached sites at the current iteration."""
        return [self.p_at(k, self.current_iter) for k in range(self.num_sites)]

    def apply(self, x, index, name):
        p = self.p_at(index, self.current_iter)
        if p >= 1.0:
            return x
        dropped = _channel_dropout(x, self.q, 'AdaptiveDropout', name)
        return p * x + (1.0 - p) * dropped

    def __repr__(self):
        return (f'AdaptiveDropout(q={self.q}, p_init={self.p_init}, step={self.step}, '
                f'sites={self.sites}, iter={self.current_iter})')
