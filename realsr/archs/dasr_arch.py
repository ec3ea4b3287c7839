"""DASR / CDDNet archs: per-sample expert-mixing dynamic convolution, the dynamic MSRResNet
generator (with or without CDDNet's LKAT "gyroscope" attention block) and the degradation
predictor that produces the mixing weights.

DASR: Liang et al., "Efficient and Degradation-Adaptive Network for Real-World Image
Super-Resolution", ECCV 2022. CDDNet: "cross dropout based dynamic network" (Aries1213/CDDNet),
built on DASR.

Names in ``ARCH_REGISTRY``:

- ``MSRResNetDynamic`` (the ``type`` used by both DASR's and CDDNet's option files). Its
  ``with_rc`` argument selects the key layout; the default ``True`` is CDDNet's (the option files
  in this project are CDDNet's, which write no such flag). ``with_rc: false`` gives DASR's.
- ``MSRResNetDynamicDASR``: ``MSRResNetDynamic`` with ``with_rc=False`` (DASR's layout).
- ``MSRResNetDynamicCDDNet``: ``MSRResNetDynamic`` with ``with_rc=True`` (explicit name).
- ``Degradation_Predictor`` (upstream name).

Dynamic weights initialisation (documented decision). Upstream leaves ``Dynamic_conv2d``
parameters as uninitialised memory and relies on loading a checkpoint (or an MSRResNet
checkpoint repeated over the experts). Here a ``MSRResNetDynamic`` records in
``dynamic_initialized`` whether its dynamic weights have ever been given values; until then
``forward`` raises a ``RuntimeError``. The flag becomes ``True`` through

- ``init_dynamic_weights()`` (explicit random init, see below; or ``init_dynamic=True`` in the
  constructor / option file),
- ``load_state_dict`` with a dict that holds every ``Dynamic_conv2d`` weight and bias,
- ``load_msrresnet_state_dict(sd)`` / ``MSRResNetDynamic.from_msrresnet(sd, ...)`` (each MSRResNet
  conv weight and bias repeated over the K experts, as DASR does).

Placeholder values before that are zeros (CDDNet: no RNG draw), except that the DASR layout draws
its placeholder weight from ``torch.randn`` like DASR does, so that a seeded constructor followed by
``init_dynamic_weights()`` consumes the random stream exactly as the oracle's recipe.
"""
import torch
from torch import nn
from torch.nn import functional as F

from realsr.regularizers.cross_dropout import CrossDropout
from realsr.registry import ARCH_REGISTRY

_SUPPORTED_UPSCALES = (2, 3, 4)


class Dynamic_conv2d(nn.Module):  # upstream name
    """Convolution whose kernel is a per-sample mixture of ``K`` expert kernels.

    Parameters: ``weight`` (K, out, in/groups, k, k) and ``bias`` (K, out). For a batch with
    mixing weights ``weights`` (B, K), sample b is convolved with W_b = sum_k weights[b,k] W_k and
    bias_b = sum_k weights[b,k] bias_k. All samples run as one grouped convolution over the batch
    (the batch is folded into channels, groups = B * groups). Weights are used as given (no
    softmax). ``padding`` defaults to 1 (every use here is 3x3).

    Args:
        randn_placeholder: draw the (still "uninitialised") weight from ``torch.randn`` as DASR
            does; otherwise zeros. Either way the values are a placeholder, see
            ``init_parameters``.
    """

    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=1, dilation=1, groups=1,
                 if_bias=True, K=5, randn_placeholder=False):
        super().__init__()
        if in_planes % groups:
            raise ValueError(f'Dynamic_conv2d: in_planes={in_planes} is not divisible by groups={groups}.')
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.K = K
        shape = (K, out_planes, in_planes // groups, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.randn(shape) if randn_placeholder else torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(K, out_planes)) if if_bias else None

    @torch.no_grad()
    def init_parameters(self, bias_std=0.01):
        """Kaiming-uniform (a=0, fan_in of one expert) on each of the K expert kernels, then the
        bias ~ N(0, bias_std^2). This is the explicit init the oracle's ``<name>.pth`` files use."""
        for k in range(self.K):
            nn.init.kaiming_uniform_(self.weight[k])
        if self.bias is not None:
            self.bias.zero_()
            self.bias.normal_(0, bias_std)

    def forward(self, x, weights):
        b, c, h, w = x.shape
        if c != self.in_planes:
            raise ValueError(f'Dynamic_conv2d: expected {self.in_planes} input channels, got {c}.')
        if weights.shape != (b, self.K):
            raise ValueError(f'Dynamic_conv2d: weights must have shape (batch, K) = ({b}, {self.K}), '
                             f'got {tuple(weights.shape)}.')
        weights = weights.to(self.weight.dtype)
        kernel = (weights @ self.weight.reshape(self.K, -1)).reshape(
            b * self.out_planes, self.in_planes // self.groups, self.kernel_size, self.kernel_size)
        bias = (weights @ self.bias).reshape(-1) if self.bias is not None else None
        out = F.conv2d(x.reshape(1, b * c, h, w), kernel, bias, self.stride, self.padding, self.dilation,
                       self.groups * b)
        return out.reshape(b, self.out_planes, out.shape[-2], out.shape[-1])

    def extra_repr(self):
        return (f'{self.in_planes}, {self.out_planes}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, K={self.K}, bias={self.bias is not None}')


class ResidualBlockNoBNDynamic(nn.Module):
    """x + res_scale * conv2(relu(conv1(x, w)), w) with dynamic convs (keys ``conv1.*``, ``conv2.*``)."""

    def __init__(self, num_feat=64, res_scale=1, num_models=5, randn_placeholder=False):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = Dynamic_conv2d(num_feat, num_feat, 3, K=num_models, randn_placeholder=randn_placeholder)
        self.conv2 = Dynamic_conv2d(num_feat, num_feat, 3, K=num_models, randn_placeholder=randn_placeholder)
        self.relu = nn.ReLU()

    def forward(self, x, weights):
        return x + self.conv2(self.relu(self.conv1(x, weights)), weights) * self.res_scale


class LKAT(nn.Module):
    """CDDNet's "gyroscope" large-kernel attention (attribute ``RC`` of the generator).

    t = GELU(conv1x1(x)); a = conv1x1(dw9x9 dilation 3 (dw7x7 (t))); out = conv1x1(t * a).
    No residual inside. Ordinary ``nn.Conv2d`` layers with PyTorch's default init.
    """

    def __init__(self, n_feats):
        super().__init__()
        self.conv0 = nn.Sequential(nn.Conv2d(n_feats, n_feats, 1, 1, 0), nn.GELU())
        self.att = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 7, 1, 3, groups=n_feats),
            nn.Conv2d(n_feats, n_feats, 9, stride=1, padding=12, groups=n_feats, dilation=3),
            nn.Conv2d(n_feats, n_feats, 1, 1, 0))
        self.conv1 = nn.Conv2d(n_feats, n_feats, 1, 1, 0)

    def forward(self, x):
        x = self.conv0(x)
        return self.conv1(x * self.att(x))


def _repeat_over_experts(name, value, target_shape, num_models):
    """MSRResNet conv ``value`` -> the dynamic parameter of ``target_shape`` (leading K dim)."""
    expected = tuple(target_shape[1:])
    if tuple(value.shape) != expected:
        raise ValueError(f'MSRResNet -> MSRResNetDynamic: key {name!r} has shape {tuple(value.shape)}, '
                         f'but the dynamic generator needs {expected} per expert '
                         f'(its parameter is {tuple(target_shape)}).')
    return value.unsqueeze(0).repeat(num_models, *([1] * value.dim()))


@ARCH_REGISTRY.register()
class MSRResNetDynamic(nn.Module):  # upstream name, used by DASR's and CDDNet's option files
    """DASR's dynamic modified SRResNet; with ``with_rc`` CDDNet's version (LKAT block ``RC``).

    Every conv is a ``Dynamic_conv2d`` with ``num_models`` experts mixed per sample by the
    ``weights`` (B, num_models) given to ``forward(x, weights)`` (upstream signature), e.g. the
    ``weights`` output of ``Degradation_Predictor``. Forward:
    lrelu(conv_first) -> num_block dynamic residual blocks (no long skip) -> pixel-shuffle
    upsampler (x4: two x2 stages) -> lrelu(conv_hr) -> [RC (LKAT)] -> conv_last, plus the bilinear
    upsample of the input. LeakyReLU slope 0.1.

    CDDNet's cross-dropout modules (``dropout1``: whole columns, ``dropout2``: whole rows, between
    RC and conv_last) have no parameters and are the identity in eval mode, so they are the
    ``CrossDropout`` regularizer (p_col 0.2, p_row 0.01, at ``conv_last:input``), which the CDDNet
    layout carries by default (``cross_dropout``) so that CDDNet's own option files train as CDDNet
    does. Set ``cross_dropout: false`` to list it (or another regularizer) under ``regularizers:``.

    The dynamic weights must be initialised before use (see the module docstring):
    ``init_dynamic_weights()``, a full state dict, or ``load_msrresnet_state_dict``. Otherwise
    ``forward`` raises ``RuntimeError``.

    Args:
        num_in_ch, num_out_ch, num_feat, num_block: as MSRResNet.
        num_models: number of experts K. upscale: 2, 3 or 4.
        with_rc: CDDNet's LKAT block (keys ``RC.*``); False gives DASR's layout.
        init_dynamic: run ``init_dynamic_weights()`` at the end of the constructor.
        cross_dropout: attach CDDNet's cross dropout (default: ``with_rc``, i.e. with CDDNet's layout).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, num_models=5, upscale=4,
                 with_rc=True, init_dynamic=False, cross_dropout=None):
        super().__init__()
        if upscale not in _SUPPORTED_UPSCALES:
            raise ValueError(f'MSRResNetDynamic: upscale={upscale!r} is not supported; '
                             f'use one of {_SUPPORTED_UPSCALES}.')
        self.num_in_ch, self.num_out_ch, self.num_feat = num_in_ch, num_out_ch, num_feat
        self.num_block, self.num_models, self.upscale = num_block, num_models, upscale
        self.with_rc = with_rc
        # DASR draws its placeholder kernels from randn; keep that for the seeded RNG stream.
        rnd = not with_rc

        def dyn(cin, cout):
            return Dynamic_conv2d(cin, cout, 3, K=num_models, randn_placeholder=rnd)

        self.conv_first = dyn(num_in_ch, num_feat)
        self.body = nn.ModuleList(
            ResidualBlockNoBNDynamic(num_feat, num_models=num_models, randn_placeholder=rnd)
            for _ in range(num_block))
        if upscale == 4:
            self.upconv1 = dyn(num_feat, num_feat * 4)
            self.upconv2 = dyn(num_feat, num_feat * 4)
            self.pixel_shuffle = nn.PixelShuffle(2)
        else:
            self.upconv1 = dyn(num_feat, num_feat * upscale * upscale)
            self.pixel_shuffle = nn.PixelShuffle(upscale)
        self.conv_hr = dyn(num_feat, num_feat)
        self.conv_last = dyn(num_feat, num_out_ch)
        if with_rc:
            self.RC = LKAT(num_feat)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1)
        self.dynamic_initialized = False
        if init_dynamic:
            self.init_dynamic_weights()
        if with_rc if cross_dropout is None else cross_dropout:
            self.regularizers = [CrossDropout(p_col=0.2, p_row=0.01, sites=['conv_last:input']).attach(self)]

    # ----- initialisation ------------------------------------------------------------------
    def dynamic_convs(self):
        """(name, Dynamic_conv2d) pairs in ``named_modules()`` order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, Dynamic_conv2d)]

    @torch.no_grad()
    def init_dynamic_weights(self, bias_std=0.01):
        """Explicit random init of every Dynamic_conv2d in ``named_modules()`` order: Kaiming-uniform
        per expert kernel, bias ~ N(0, bias_std^2). After ``torch.manual_seed(0)`` + constructor this
        reproduces the oracle's ``dasr/cddnet_msrresnetdynamic_x4.pth``. Returns self."""
        for _, m in self.dynamic_convs():
            m.init_parameters(bias_std)
        self.dynamic_initialized = True
        return self

    def _dynamic_keys(self):
        keys = []
        for name, m in self.dynamic_convs():
            keys.append(f'{name}.weight')
            if m.bias is not None:
                keys.append(f'{name}.bias')
        return keys

    @staticmethod
    def is_msrresnet_state_dict(state_dict):
        """True when ``state_dict`` looks like an ordinary (non-dynamic) MSRResNet's: 4-D conv_first."""
        w = state_dict.get('conv_first.weight')
        return w is not None and w.dim() == 4

    @torch.no_grad()
    def load_msrresnet_state_dict(self, state_dict, strict=True):
        """Initialise from an ordinary ``MSRResNet`` state dict (same num_feat / num_block / upscale):
        every conv weight (out, in, k, k) and bias (out,) is repeated over the K experts, as DASR's
        ``load_network_init_alldynamic`` does. Keys must be MSRResNet's (``body.{i}.conv{1,2}``).

        With ``strict``, every dynamic parameter must be covered and no unexpected key may remain;
        a ``ValueError`` names the keys. Non-dynamic parameters (CDDNet's ``RC.*``) are loaded when
        present and otherwise keep their init. Returns (missing_keys, unexpected_keys).
        """
        own = dict(self.named_parameters())
        dyn_keys = set(self._dynamic_keys())
        new_sd, unexpected = {}, []
        for key, value in state_dict.items():
            if key in dyn_keys:
                new_sd[key] = _repeat_over_experts(key, value, own[key].shape, self.num_models)
            elif key in own:
                if tuple(value.shape) != tuple(own[key].shape):
                    raise ValueError(f'MSRResNet -> MSRResNetDynamic: key {key!r} has shape '
                                     f'{tuple(value.shape)}, expected {tuple(own[key].shape)}.')
                new_sd[key] = value
            else:
                unexpected.append(key)
        missing_dyn = sorted(dyn_keys - new_sd.keys())
        missing = sorted(set(own) - new_sd.keys())
        if strict and (missing_dyn or unexpected):
            raise ValueError('MSRResNet -> MSRResNetDynamic: the MSRResNet state dict does not fit; '
                             f'dynamic keys missing: {missing_dyn}; unexpected keys: {sorted(unexpected)}.')
        nn.Module.load_state_dict(self, new_sd, strict=False)
        if not missing_dyn:
            self.dynamic_initialized = True
        return missing, sorted(unexpected)

    @classmethod
    def from_msrresnet(cls, state_dict, strict=True, **kwargs):
        """Build a ``MSRResNetDynamic(**kwargs)`` and initialise it from a MSRResNet state dict
        (see ``load_msrresnet_state_dict``)."""
        model = cls(**kwargs)
        model.load_msrresnet_state_dict(state_dict, strict=strict)
        return model

    def load_state_dict(self, state_dict, strict=True, assign=False):
        if self.is_msrresnet_state_dict(state_dict):
            raise ValueError('MSRResNetDynamic.load_state_dict: this is an ordinary MSRResNet state dict '
                             '(4-D conv weights); use load_msrresnet_state_dict() / '
                             'MSRResNetDynamic.from_msrresnet() to repeat it over the experts.')
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if all(k in state_dict for k in self._dynamic_keys()):
            self.dynamic_initialized = True
        return result

    # ----- forward -------------------------------------------------------------------------
    def forward(self, x, weights):
        if not self.dynamic_initialized:
            raise RuntimeError(
                'MSRResNetDynamic: the Dynamic_conv2d weights were never initialised (upstream leaves '
                'them as uninitialised memory). Load a MSRResNetDynamic checkpoint, start from an '
                'ordinary MSRResNet checkpoint with load_msrresnet_state_dict()/from_msrresnet() '
                '(weights repeated over the experts), or call init_dynamic_weights() '
                '(init_dynamic: true in network_g).')
        feat = self.lrelu(self.conv_first(x, weights))
        for block in self.body:
            feat = block(feat, weights)
        out = self.lrelu(self.pixel_shuffle(self.upconv1(feat, weights)))
        if self.upscale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out, weights)))
        out = self.lrelu(self.conv_hr(out, weights))
        if self.with_rc:
            out = self.RC(out)
        out = self.conv_last(out, weights)
        base = F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)
        return out + base


@ARCH_REGISTRY.register()
class MSRResNetDynamicDASR(MSRResNetDynamic):
    """``MSRResNetDynamic`` in DASR's layout (no ``RC`` block): ``with_rc=False``."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, num_models=5, upscale=4,
                 init_dynamic=False, cross_dropout=False):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, num_models, upscale, with_rc=False,
                         init_dynamic=init_dynamic, cross_dropout=cross_dropout)


@ARCH_REGISTRY.register()
class MSRResNetDynamicCDDNet(MSRResNetDynamic):
    """``MSRResNetDynamic`` in CDDNet's layout (with the LKAT ``RC`` block): ``with_rc=True``."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, num_models=5, upscale=4,
                 init_dynamic=False, cross_dropout=True):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, num_models, upscale, with_rc=True,
                         init_dynamic=init_dynamic, cross_dropout=cross_dropout)


@ARCH_REGISTRY.register()
class Degradation_Predictor(nn.Module):  # upstream name
    """DASR's degradation predictor.

    ConvNet: six 5x5 convs (padding 2; channels in_nc -> nf x4 (the 4th with stride 2) -> nf ->
    num_params), each followed by LeakyReLU(0.2), the last included; global average pool ->
    ``out_params`` (B, num_params). MappingNet: Linear(num_params, 15) -> Linear(15, num_networks),
    no activation, no softmax -> ``weights`` (B, num_networks). forward returns
    ``(out_params, weights)``. PyTorch default init.
    """

    def __init__(self, in_nc=3, nf=64, num_params=100, num_networks=5, use_bias=True):
        super().__init__()
        chans = [in_nc, nf, nf, nf, nf, nf, num_params]
        layers = []
        for i in range(6):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 5, 2 if i == 3 else 1, 2, bias=use_bias),
                       nn.LeakyReLU(0.2)]
        self.ConvNet = nn.Sequential(*layers)
        self.globalPooling = nn.AdaptiveAvgPool2d(1)
        self.MappingNet = nn.Sequential(nn.Linear(num_params, 15), nn.Linear(15, num_networks))

    def forward(self, x):
        out_params = self.globalPooling(self.ConvNet(x)).flatten(1)
        return out_params, self.MappingNet(out_params)


class PredictorConditionedNet(nn.Module):
    """A dynamic generator and its degradation predictor as one image-to-image network, for
    inference: ``forward(x) = net_g(x, net_p(x)[1])``.

    ``condition(x)`` fixes the expert weights from a whole image, so that tiles of it (see
    :func:`realsr.utils.tiling.tiled_forward`) are all super-resolved with the weights of the
    whole image, as an untiled run would; ``condition(None)`` clears them.
    """

    def __init__(self, net_g, net_p):
        super().__init__()
        self.net_g, self.net_p = net_g, net_p
        self.fixed_weights = None

    def condition(self, x):
        self.fixed_weights = None if x is None else self.net_p(x)[1]

    def forward(self, x):
        weights = self.fixed_weights if self.fixed_weights is not None else self.net_p(x)[1]
        return self.net_g(x, weights)
