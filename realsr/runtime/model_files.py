"""Network files in BasicSR's ``.pth`` format and in safetensors.

A realsr ``.safetensors`` network file is ONE file per iteration, like the ``.pth``: the tensors of
every stored network copy carry its param key as a prefix (``params.conv_first.weight``,
``params_ema.conv_first.weight``). One file because it is written in one atomic rename (never a
``params`` of one iteration beside a ``params_ema`` of another), because resume, retention and
``--auto_resume`` then treat both formats alike, and because the metadata describes both copies.
The string metadata (safetensors allows only strings) holds:

* ``format``: ``realsr``; ``param_keys``: JSON list of the prefixes, in file order;
* ``arch``: the arch type; ``arch_args``: JSON of its constructor arguments (``network_g`` without
  ``type``), so a file loads without naming its arch (:mod:`realsr.archs.detect`);
* ``realsr_version`` and ``iteration``.

A safetensors file without realsr's metadata (traiNNer-redux, chaiNNer, a hand export) is read as
one bare state dict. Training states stay ``.state`` (torch pickles of optimizer states).
"""
import json
import os
from collections import OrderedDict

from realsr import option_defs as defs

FORMATS = defs.CHECKPOINT_FORMATS
EXTENSIONS = {'pth': '.pth', 'safetensors': '.safetensors'}


def save_checkpoint_format(opt):
    """``logger.save_checkpoint_format`` of an option dict (validated by the option checker)."""
    value = defs.value(opt.get('logger'), defs.LOGGER, 'save_checkpoint_format')
    if value not in FORMATS:  # options that skipped the checker (a hand-made dict)
        raise ValueError(f"'logger.save_checkpoint_format' must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


def is_safetensors(path):
    return str(path).lower().endswith('.safetensors')


def network_file(models_dir, label, iteration, fmt=None):
    """``<models_dir>/<label>_<iteration>.<ext>``: with ``fmt`` that format's name, else the file
    that exists (``.pth`` first, as BasicSR's), else None."""
    if fmt is not None:
        return os.path.join(models_dir, f'{label}_{iteration}{EXTENSIONS[fmt]}')
    for ext in EXTENSIONS.values():
        path = os.path.join(models_dir, f'{label}_{iteration}{ext}')
        if os.path.isfile(path):
            return path
    return None


def arch_metadata(network_opt, iteration=None):
    """The metadata of a network saved from ``network_opt`` (an option file's ``network_g``)."""
    from realsr.version import __version__
    meta = {'realsr_version': __version__}
    if iteration is not None:
        meta['iteration'] = str(iteration)
    if isinstance(network_opt, dict) and network_opt.get('type'):
        meta['arch'] = str(network_opt['type'])
        args = {k: v for k, v in network_opt.items() if k != 'type'}
        meta['arch_args'] = json.dumps(args, sort_keys=True, default=repr)
    return meta


def _unshared(tensors):
    """safetensors refuses tensors that share memory: clone the second and later users of a storage."""
    seen, out = set(), OrderedDict()
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        out[name] = t.clone() if ptr is not None and ptr in seen or not t.is_contiguous() else t
        if ptr is not None:
            seen.add(ptr)
    return out


def safetensors_writer(metadata=None):
    """A ``write(states, file)`` for :func:`realsr.runtime.checkpoint.atomic_save`: ``states`` is
    ``{param_key: state_dict}``; the file gets prefixed keys and realsr's metadata."""
    from safetensors.torch import save as to_bytes

    def write(states, f):
        flat = OrderedDict()
        for key, state in states.items():
            if '.' in key:
                raise ValueError(f'param key {key!r} must not contain a dot (it is the safetensors key prefix)')
            for name, tensor in state.items():
                flat[f'{key}.{name}'] = tensor
        meta = {'format': 'realsr', 'param_keys': json.dumps(list(states))}
        meta.update({k: str(v) for k, v in (metadata or {}).items()})
        f.write(to_bytes(_unshared(flat), metadata=meta))

    return write


def read_metadata(path):
    """The string metadata of a safetensors file ({} when it has none)."""
    from safetensors import safe_open
    with safe_open(path, framework='pt') as f:
        return dict(f.metadata() or {})


def read_safetensors(path):
    """``(checkpoint, metadata)``: realsr's files as ``{param_key: state_dict}`` (the ``.pth``
    layout), other files as one bare state dict."""
    from safetensors.torch import load_file
    meta = read_metadata(path)
    tensors = load_file(path, device='cpu')
    if meta.get('format') != 'realsr':
        return OrderedDict(tensors), meta
    keys = json.loads(meta.get('param_keys', '[]'))
    ckpt = OrderedDict((key, OrderedDict()) for key in keys)
    for name, tensor in tensors.items():
        key, _, rest = name.partition('.')
        if key not in ckpt:
            raise ValueError(f'{path!r}: tensor {name!r} has no param key of {keys} as prefix')
        ckpt[key][rest] = tensor
    return ckpt, meta


def load_network_dict(path):
    """What a network file holds, in the ``.pth`` layout: ``{param_key: state_dict}`` or a bare
    state dict; ``.safetensors`` by its suffix, anything else through ``torch.load``."""
    if is_safetensors(path):
        return read_safetensors(path)[0]
    import torch  # here: the option checker imports this module, and checking a file must stay cheap
    return torch.load(path, map_location='cpu', weights_only=True)


def arch_from_metadata(path):
    """``(type, kwargs)`` stored in a realsr safetensors file, or None (other files, no metadata)."""
    if not is_safetensors(path):
        return None
    meta = read_metadata(path)
    if meta.get('format') != 'realsr' or not meta.get('arch'):
        return None
    return meta['arch'], json.loads(meta.get('arch_args') or '{}')


AUTO_ARCH = 'auto'


def resolve_auto_networks(opt, source=None):
    """``network_<x>: {type: auto}`` -> the arch of ``path.pretrain_network_<x>`` (its safetensors
    metadata, else :func:`realsr.archs.detect.detect_arch`); other keys of the section override the
    detected ones (e.g. ``img_range``, which no shape tells). In place; returns ``opt``."""
    from realsr.archs.detect import ArchNotDetected, detect_arch
    from realsr.utils.option_error import OptionError

    path_opt = opt.get('path') if isinstance(opt.get('path'), dict) else {}
    for key, net_opt in list(opt.items()):
        if not (key.startswith('network_') and isinstance(net_opt, dict) and net_opt.get('type') == AUTO_ARCH):
            continue
        label = key[len('network_'):]
        model = path_opt.get(f'pretrain_network_{label}')
        if not model:
            raise OptionError([f"'{key}.type: auto' reads the arch from 'path.pretrain_network_{label}', which is "
                               'not set'], source)
        if not os.path.isfile(model):
            raise OptionError([f"'path.pretrain_network_{label}': {model!r} does not exist (needed by "
                               f"'{key}.type: auto')"], source)
        stored = arch_from_metadata(model)
        if stored is None:
            from realsr.runtime.checkpoint import read_network_file
            try:
                stored = detect_arch(read_network_file(model, path_opt.get(f'param_key_{label}') or 'params'), model)
            except (ArchNotDetected, RuntimeError, KeyError) as err:
                raise OptionError([f"'{key}.type: auto': {err}"], source) from None
        opt[key] = {'type': stored[0], **stored[1], **{k: v for k, v in net_opt.items() if k != 'type'}}
    return opt
