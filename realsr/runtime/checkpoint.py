"""Checkpoint files in BasicSR's formats, written atomically.

``models/net_g_<iter>.pth`` holds ``{'params': ..., 'params_ema': ...}``;
``training_states/<iter>.state`` holds ``epoch``, ``iter``, ``optimizers``, ``schedulers`` (what
BasicSR stores) plus what an exact resume needs (RNG states, sampler position, best metrics).
Every file is written to a temporary name in the same folder and renamed into place, so a crash
or a kill leaves either the old file or the new one, never half of one.
"""
import collections
import logging
import os
import re
import time

import torch

from realsr.runtime import model_files

logger = logging.getLogger('realsr')


def unwrap(net):
    """The bare module inside DataParallel / DistributedDataParallel and ``torch.compile``."""
    while isinstance(net, torch.nn.Module):
        if isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            net = net.module
        elif isinstance(getattr(net, '_orig_mod', None), torch.nn.Module):  # torch.compile's OptimizedModule
            net = net._orig_mod
        else:
            break
    return net


def cpu_state_dict(net):
    """The state dict on the CPU as plain contiguous tensors (channels_last weights included), with
    BasicSR's keys (no ``module.`` / ``_orig_mod.`` prefixes)."""
    state = unwrap(net).state_dict()
    return collections.OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k,
         v.detach().cpu().contiguous(memory_format=torch.contiguous_format)) for k, v in state.items())


def non_finite_entries(state_dict):
    """Names of the floating entries of ``state_dict`` that hold a NaN or an Inf."""
    names = [k for k, v in state_dict.items() if v.is_floating_point()]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(state_dict[k]).all() for k in names]).tolist()
    return [k for k, ok in zip(names, flags) if not ok]


def atomic_save(obj, path, retries=3, write=None):
    """``torch.save`` through a temporary file and ``os.replace``; retried like BasicSR's save.
    ``write(obj, file)`` replaces ``torch.save`` (safetensors: :mod:`realsr.runtime.model_files`)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
    for attempt in range(1, retries + 1):
        try:
            with open(tmp, 'wb') as f:
                (write or torch.save)(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return True
        except Exception as err:  # disk full, permissions, interrupted write ...
            if os.path.exists(tmp):
                os.remove(tmp)
            if attempt == retries:
                logger.error('Could not save %s after %d attempts (%s: %s); the previous checkpoint is intact.',
                             path, retries, type(err).__name__, err)
                raise
            logger.warning('Saving %s failed (%s); retrying.', path, err)
            time.sleep(0.5)
    return False


def save_network(nets, path, param_keys, metadata=None):
    """Save one or more networks in one file: ``{param_key: state_dict, ...}``; a ``.safetensors``
    path gets :mod:`realsr.runtime.model_files`' layout with ``metadata`` (arch, iteration)."""
    nets = nets if isinstance(nets, (list, tuple)) else [nets]
    param_keys = param_keys if isinstance(param_keys, (list, tuple)) else [param_keys]
    if len(nets) != len(param_keys):
        raise ValueError('save_network: one param_key per network is needed')
    states = {key: cpu_state_dict(net) for net, key in zip(nets, param_keys)}
    for key, state in states.items():
        bad = non_finite_entries(state)
        if bad:  # a NaN checkpoint would poison every resume and every later fine-tuning
            raise FloatingPointError(f'not writing {path}: {key} has NaN/Inf in {len(bad)} tensor(s) '
                                     f"({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); the previous "
                                     'checkpoints are intact')
    write = model_files.safetensors_writer(metadata) if model_files.is_safetensors(path) else None
    atomic_save(states, path, write=write)


def _looks_like_state_dict(obj):
    return isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_network_file(load_path, param_key='params'):
    """Return the state dict stored under ``param_key`` (BasicSR's fallbacks included)."""
    if not os.path.isfile(load_path):
        raise FileNotFoundError(f'network file {load_path!r} does not exist (check path.pretrain_network_*)')
    try:
        ckpt = model_files.load_network_dict(load_path)  # .pth or .safetensors
    except Exception as err:
        raise RuntimeError(f'cannot read network file {load_path!r}: {type(err).__name__}: {err}') from err
    if param_key is None or _looks_like_state_dict(ckpt) and param_key not in ckpt:
        if not _looks_like_state_dict(ckpt):
            raise KeyError(f'{load_path!r} is not a bare state dict; set param_key to one of {list(ckpt)}')
        return ckpt
    if param_key not in ckpt:
        if 'params' in ckpt:
            logger.info('Loading: %s does not exist in %s, use params.', param_key, load_path)
            param_key = 'params'
        else:
            raise KeyError(f"param_key {param_key!r} is not in {load_path!r}; it holds {list(ckpt)}")
    return ckpt[param_key]


def load_network(net, load_path, strict=True, param_key='params'):
    """Load weights into ``net``. With ``strict=False`` keys whose shapes differ are skipped
    (BasicSR renames them ``<key>.ignore``) and reported."""
    net = unwrap(net)
    state = collections.OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v) for k, v in read_network_file(load_path, param_key).items())
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if strict and (missing or unexpected or mismatched):
        lines = [f'{load_path!r} does not match {type(net).__name__} (strict loading):']
        if missing:
            lines.append(f'  missing keys ({len(missing)}): {", ".join(missing[:20])}' + (' ...' if len(missing) > 20 else ''))
        if unexpected:
            lines.append(f'  unexpected keys ({len(unexpected)}): {", ".join(unexpected[:20])}' +
                         (' ...' if len(unexpected) > 20 else ''))
        for k in mismatched[:20]:
            lines.append(f'  shape of {k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}')
        lines.append('  Check network_g against the checkpoint, or set path.strict_load_g: false to load what fits.')
        raise RuntimeError('\n'.join(lines))
    for k in mismatched:
        logger.warning('Size different, ignore [%s]: file %s vs network %s', k, tuple(state[k].shape), tuple(own[k].shape))
        state[k + '.ignore'] = state.pop(k)
    if missing or unexpected:
        logger.warning('Loading %s non-strictly: missing %s, unexpected %s', load_path, missing, unexpected)
    net.load_state_dict({k: v for k, v in state.items() if not k.endswith('.ignore')}, strict=False)
    logger.info('Loaded %s [%s] into %s.', load_path, param_key, type(net).__name__)


_STATE_RE = re.compile(r'^(\d+)\.state$')


def find_latest_state(state_dir, models_dir=None):
    """Path of the largest ``<N>.state`` whose ``net_g_<N>.pth`` (or ``.safetensors``) also exists, or None."""
    if not os.path.isdir(state_dir):
        return None
    iters = sorted((int(m.group(1)) for m in map(_STATE_RE.match, os.listdir(state_dir)) if m), reverse=True)
    for it in iters:
        if models_dir is None or model_files.network_file(models_dir, 'net_g', it):
            return os.path.join(state_dir, f'{it}.state')
        logger.warning('Ignoring training state %d.state: its net_g_%d.pth is missing.', it, it)
    return None


def load_training_state(path):
    """Load a ``.state`` file. Scheduler states hold a ``collections.Counter``, allowed here."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'training state {path!r} does not exist (check path.resume_state)')
    with torch.serialization.safe_globals([collections.Counter]):
        try:
            return torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:
            raise RuntimeError(f'cannot read training state {path!r}: {type(err).__name__}: {err}') from err
