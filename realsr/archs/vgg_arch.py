"""VGG feature extractor for perceptual losses, without torchvision (BasicSR ``VGGFeatureExtractor``).

VGG: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015. Layers carry BasicSR's names (``conv1_1``, ``relu1_1``, ..., ``pool5``; ``bn*`` for
the ``_bn`` variants); layer ``i`` of the list is ``features.<i>`` of torchvision's VGG, so
torchvision's ImageNet weight files (``vgg19-dcbb9e9d.pth`` etc.) load directly.

The weights are never downloaded at run time: the file is looked up in a fixed list of places
(:func:`vgg_weight_candidates`) and a missing file is a ``FileNotFoundError`` that says where to
get it and how to point at it.
"""
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from realsr.registry import ARCH_REGISTRY

# Conv widths per block, 'M' = max-pool (the VGG paper's configurations A, B, D, E).
_CFGS = {
    'vgg11': [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    'vgg13': [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    'vgg16': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
    'vgg19': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
}
VGG_TYPES = tuple(_CFGS) + tuple(f'{t}_bn' for t in _CFGS)

# torchvision's ImageNet weight files; the first name is the current one, later names are
# older releases of the same weights that are also accepted.
WEIGHT_FILES = {
    'vgg11': ('vgg11-8a719046.pth', 'vgg11-bbd30ac9.pth'),
    'vgg13': ('vgg13-19584684.pth', 'vgg13-c768596a.pth'),
    'vgg16': ('vgg16-397923af.pth', ),
    'vgg19': ('vgg19-dcbb9e9d.pth', ),
    'vgg11_bn': ('vgg11_bn-6002323d.pth', ),
    'vgg13_bn': ('vgg13_bn-abd245e5.pth', ),
    'vgg16_bn': ('vgg16_bn-6c64b313.pth', ),
    'vgg19_bn': ('vgg19_bn-c79401a0.pth', ),
}
DOWNLOAD_ROOT = 'https://download.pytorch.org/models/'
ENV_VAR = 'REALSR_VGG_WEIGHTS'
# Relative to the working directory; the first is where BasicSR looks.
LOCAL_DIRS = ('experiments/pretrained_models', 'pretrained_models')

_BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var')


def _check_type(vgg_type):
    if vgg_type not in VGG_TYPES:
        raise ValueError(f'VGG type {vgg_type!r} is not supported; use one of {", ".join(VGG_TYPES)}.')


def vgg_layer_names(vgg_type='vgg19'):
    """Layer names in torchvision ``features`` order: index ``i`` here is ``features.<i>``."""
    _check_type(vgg_type)
    with_bn = vgg_type.endswith('_bn')
    names, block, conv = [], 1, 0
    for v in _CFGS[vgg_type.replace('_bn', '')]:
        if v == 'M':
            names.append(f'pool{block}')
            block, conv = block + 1, 0
        else:
            conv += 1
            names.append(f'conv{block}_{conv}')
            if with_bn:
                names.append(f'bn{block}_{conv}')
            names.append(f'relu{block}_{conv}')
    return names


def _layer_channels(vgg_type):
    """Output channels of every conv/bn layer, by index."""
    channels, c = {}, 3
    widths = iter(v for v in _CFGS[vgg_type.replace('_bn', '')] if v != 'M')
    for i, name in enumerate(vgg_layer_names(vgg_type)):
        if name.startswith('conv'):
            c = next(widths)
        if name.startswith(('conv', 'bn')):
            channels[i] = c
    return channels


def torchvision_keys(vgg_type='vgg19'):
    """The ``features.*`` keys of torchvision's state dict for ``vgg_type`` (BN's
    ``num_batches_tracked`` left out: old files lack it)."""
    keys = []
    for i, name in enumerate(vgg_layer_names(vgg_type)):
        if name.startswith('conv'):
            keys += [f'features.{i}.weight', f'features.{i}.bias']
        elif name.startswith('bn'):
            keys += [f'features.{i}.{k}' for k in _BN_KEYS]
    return keys


def vgg_weight_candidates(vgg_type='vgg19', pretrained_path=None):
    """Places searched for the weights, in order: ``pretrained_path``, ``$REALSR_VGG_WEIGHTS``
    (a file, or a folder holding the file), ``experiments/pretrained_models/<file>``,
    ``pretrained_models/<file>``, ``<torch hub dir>/checkpoints/<file>``."""
    _check_type(vgg_type)
    files = WEIGHT_FILES[vgg_type]
    places = []
    if pretrained_path:
        places.append(Path(pretrained_path).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        env_path = Path(env).expanduser()
        places += [env_path / f for f in files] if env_path.is_dir() else [env_path]
    for folder in LOCAL_DIRS:
        places += [Path(folder).absolute() / f for f in files]
    hub_checkpoints = Path(torch.hub.get_dir()).expanduser() / 'checkpoints'
    places += [hub_checkpoints / f for f in files]
    return places


def find_vgg_weights(vgg_type='vgg19', pretrained_path=None):
    """Return the first existing weight file of :func:`vgg_weight_candidates`. An explicit
    ``pretrained_path`` that does not exist is an error of its own (no silent fallback)."""
    places = vgg_weight_candidates(vgg_type, pretrained_path)
    if pretrained_path:
        if places[0].is_file():
            return places[0]
        raise FileNotFoundError(_missing_message(vgg_type, places[:1], explicit=True))
    for place in places:
        if place.is_file():
            return place
    raise FileNotFoundError(_missing_message(vgg_type, places))


def _missing_message(vgg_type, places, explicit=False):
    name = WEIGHT_FILES[vgg_type][0]
    env = os.environ.get(ENV_VAR)
    head = (f'VGG weight file for {vgg_type} not found at pretrained_path={str(places[0])!r}.' if explicit else
            f'VGG weight file for {vgg_type} ({name}) not found; realsr never downloads it at run time.')
    lines = [head, 'Searched:']
    if not explicit and not env:
        lines.append(f'  - ${ENV_VAR} (not set)')
    lines += [f'  - {p}' for p in places]
    lines += [
        f"Download torchvision's ImageNet weights from {DOWNLOAD_ROOT}{name}",
        f'and put {name} in one of the folders above, or point at the file with pretrained_path=... '
        f'(an argument of VGGFeatureExtractor / PerceptualLoss, e.g. under train.perceptual_opt) '
        f'or the environment variable {ENV_VAR}=/path/to/{name} (a folder holding it works too).',
    ]
    return '\n'.join(lines)


@ARCH_REGISTRY.register()
class VGGFeatureExtractor(nn.Module):
    """Frozen (by default) VGG returning the features of the requested layers.

    Only the layers up to the deepest requested one are built. ``forward(x)`` returns
    ``{name: feature}`` in layer order. ``conv*`` names are the features before the ReLU.

    Args:
        layer_name_list: names such as ``['conv5_4']`` or ``['relu1_1', 'relu2_1']``.
        vgg_type: vgg11/13/16/19, optionally with ``_bn``. The weight file must match it.
        use_input_norm: normalise [0, 1] input with ImageNet mean/std (buffers ``mean``/``std``).
        range_norm: map [-1, 1] input to [0, 1] first.
        requires_grad: False freezes the net (no grad, kept in eval mode).
        remove_pooling: drop the max-pool layers. pooling_stride: stride of the kept ones (kernel 2).
        pretrained_path: the torchvision weight file; None searches :func:`vgg_weight_candidates`.
    """

    def __init__(self, layer_name_list, vgg_type='vgg19', use_input_norm=True, range_norm=False,
                 requires_grad=False, remove_pooling=False, pooling_stride=2, pretrained_path=None):
        super().__init__()
        _check_type(vgg_type)
        self.vgg_type = vgg_type
        self.layer_name_list = list(layer_name_list)
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm
        self._trainable = bool(requires_grad)
        self.names = vgg_layer_names(vgg_type)
        if not self.layer_name_list:
            raise ValueError('VGGFeatureExtractor: layer_name_list is empty.')
        unknown = [n for n in self.layer_name_list if n not in self.names]
        if unknown:
            raise ValueError(f'VGGFeatureExtractor: unknown layer(s) {unknown} for {vgg_type}; '
                             f'valid names: {", ".join(self.names)}.')
        last = max(self.names.index(n) for n in self.layer_name_list)

        channels = _layer_channels(vgg_type)
        layers, c_in = OrderedDict(), 3
        self.torchvision_index = {}  # layer name -> index in torchvision's ``features``
        for i, name in enumerate(self.names[:last + 1]):
            if name.startswith('pool'):
                if remove_pooling:
                    continue
                layers[name] = nn.MaxPool2d(kernel_size=2, stride=pooling_stride)
            elif name.startswith('conv'):
                layers[name] = nn.Conv2d(c_in, channels[i], 3, 1, 1)
                c_in = channels[i]
            elif name.startswith('bn'):
                layers[name] = nn.BatchNorm2d(channels[i])
            else:
                # Not in-place (torchvision's is): a requested conv output must survive its ReLU.
                layers[name] = nn.ReLU()
            self.torchvision_index[name] = i
        self.vgg_net = nn.Sequential(layers)

        self.weight_path = find_vgg_weights(vgg_type, pretrained_path)
        self.load_torchvision_weights(torch.load(self.weight_path, map_location='cpu', weights_only=True),
                                      source=self.weight_path)

        if use_input_norm:
            # ImageNet statistics of [0, 1] RGB images
            self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        for param in self.parameters():
            param.requires_grad = requires_grad
        self.train(requires_grad)

    def load_torchvision_weights(self, state_dict, source='state dict'):
        """Load a torchvision VGG state dict (``features.<i>.*``; ``classifier.*`` ignored).

        The file's ``features`` keys must be exactly those of ``vgg_type`` (so a vgg16 file
        given for vgg19 is an error, not a silent partial load); the built layers load strictly.
        """
        features = {k: v for k, v in state_dict.items() if k.startswith('features.')}
        have = {k for k in features if not k.endswith('num_batches_tracked')}
        want = set(torchvision_keys(self.vgg_type))
        if have != want:
            missing, extra = sorted(want - have), sorted(have - want)
            raise ValueError(f'{source} is not a torchvision {self.vgg_type} state dict: '
                             f'{len(missing)} missing key(s) {missing[:4]}, {len(extra)} unexpected {extra[:4]}. '
                             f'Expected the file {WEIGHT_FILES[self.vgg_type][0]} for vgg_type={self.vgg_type!r}.')
        ours = {}
        for name, i in self.torchvision_index.items():
            prefix = f'features.{i}.'
            ours.update({name + k[len(prefix) - 1:]: v for k, v in features.items() if k.startswith(prefix)})
        self.vgg_net.load_state_dict(ours, strict=True)

    def train(self, mode=True):
        # A frozen extractor stays in eval mode (BN statistics fixed) whatever the owner does.
        return super().train(mode and self._trainable)

    def forward(self, x):
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        out = {}
        for name, layer in self.vgg_net.named_children():
            x = layer(x)
            if name in self.layer_name_list:
                out[name] = x
        return out
