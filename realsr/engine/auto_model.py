"""A network from a checkpoint alone, without naming its arch (``realsr-infer --model X``,
``realsr-export --model X``).

In order: (1) a realsr ``.safetensors`` names its arch and arguments in its metadata; (2) realsr's
detectors read the key layout and shapes (:func:`realsr.archs.detect.detect_arch`); (3) when the
optional ``spandrel`` package is installed, spandrel's loader, and its model runs the inference
(wrapped in :class:`SpandrelNet`). When none knows the file, the error lists what was tried.
"""
from torch import nn

from realsr.archs import build_network
from realsr.archs.detect import ArchNotDetected, detect_arch
from realsr.runtime import checkpoint, model_files


class ModelNotRecognised(ValueError):
    pass


class SpandrelNet(nn.Module):
    """A spandrel model as a realsr network: ``forward(x)`` on NCHW in [0, 1], plus what realsr's
    test-time code reads (``size_multiple()``, ``scale``)."""

    def __init__(self, descriptor):
        super().__init__()
        self.model = descriptor.model
        self.arch_name = descriptor.architecture.name
        self.scale = descriptor.scale
        self._multiple = descriptor.size_requirements.multiple_of
        self.descriptor_info = (f'{self.arch_name} via spandrel (x{descriptor.scale}, '
                                f'{descriptor.input_channels} -> {descriptor.output_channels} channels)')

    def size_multiple(self):
        return self._multiple

    def forward(self, x):
        return self.model(x)


def _spandrel_load(state_dict):
    """``SpandrelNet`` or an error string (spandrel missing, or not knowing the file)."""
    try:
        from spandrel import ModelLoader, UnsupportedModelError
    except ImportError:
        return None, "spandrel is not installed (pip install 'realsr[spandrel]' for community archs)"
    except Exception as err:  # e.g. a torchvision wheel that does not match torch, imported by spandrel
        return None, f'spandrel is installed but cannot be imported: {type(err).__name__}: {err}'
    try:
        return SpandrelNet(ModelLoader().load_from_state_dict(dict(state_dict))), None
    except UnsupportedModelError:
        return None, 'spandrel does not know this layout'
    except Exception as err:  # spandrel knows the arch but not this variant
        return None, f'spandrel recognised the file but could not load it: {type(err).__name__}: {err}'


def resolve(model_path, param_key='params_ema'):
    """``(net_opt, state_dict, how)``: the arch options of ``model_path`` from its metadata or the
    detectors (``net_opt`` None when only spandrel may know it), the state dict read with BasicSR's
    param-key fallbacks, and how the arch was found."""
    state = checkpoint.read_network_file(model_path, param_key)
    stored = model_files.arch_from_metadata(model_path)
    if stored is not None:
        return {'type': stored[0], **stored[1]}, state, 'safetensors metadata'
    try:
        type_name, kwargs = detect_arch(state, model_path)
    except ArchNotDetected as err:
        return None, state, err
    return {'type': type_name, **kwargs}, state, 'detected from the state dict'


def load_auto(model_path, param_key='params_ema'):
    """``(net in eval mode, net_opt or None, how)``; raises :class:`ModelNotRecognised` listing
    what was tried."""
    net_opt, state, how = resolve(model_path, param_key)
    if net_opt is not None:
        net = build_network(dict(net_opt))
        checkpoint.load_network(net, model_path, strict=True, param_key=param_key)
        return net.eval(), net_opt, how
    net, problem = _spandrel_load(state)
    if net is not None:
        return net.eval(), None, net.descriptor_info
    tried = list(how.tried) + [('spandrel', problem)]
    lines = '\n'.join(f'  - {name}: {reason}' for name, reason in tried)
    raise ModelNotRecognised(f'{model_path!r}: no known arch matches this checkpoint; give --arch (and --net-opt) '
                             f'or --opt. Tried:\n{lines}')


def describe(net_opt):
    """One line for logs: ``Type(key=value, ...)``."""
    if not net_opt:
        return '?'
    args = ', '.join(f'{k}={v}' for k, v in net_opt.items() if k != 'type')
    return f"{net_opt['type']}({args})"
