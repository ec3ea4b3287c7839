"""Checkpoint files in BasicSR's formats, written atomically.

``models/net_g_<iter>.pth`` holds ``{'params': ..., 'params_ema': ...}``;
``training_states/<iter>.state`` holds ``epoch``, ``iter``, ``optimizers``, ``schedulers`` (what
BasicSR stores) plus what an exact resume needs (RNG states, sampler position, best metrics).
Every file is written to a temporary name in the same folder and renamed into place, so a crash
or a kill leaves either the old file or the new one, never half of one.
"""
import collections
import errno
import json
import logging
import os
import re
import shutil
import time

import torch
import torch.distributed as dist

from realsr.runtime import model_files
from realsr.runtime.dist import get_dist_info
from realsr.utils.state_dict import state_dict_diff, strip_module_prefix

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


class NetworkMismatchError(RuntimeError):
    """A network file whose keys or shapes do not match the network (strict loading)."""


class DiskFullError(OSError):
    """A checkpoint could not be written because its file system is full (``errno.ENOSPC``)."""

    def __init__(self, path, free_bytes=None):
        free = '' if free_bytes is None else f' ({free_bytes / 2**20:.1f} MiB free)'
        super().__init__(errno.ENOSPC, f'no space left on device: {path}{free}; the previous checkpoints are intact: '
                                       'free some space, then resume with --auto_resume')
        self.path = path

    def __str__(self):
        return self.strerror


# torch.save reports a failed write in its own words, without the errno
_TORCH_WRITE_FAILURES = ('unexpected pos', 'file write failed', 'PytorchStreamWriter failed')
_NEARLY_FULL_BYTES = 1 << 20


def _free_bytes(folder):
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _is_disk_full(err, folder):
    """True for ENOSPC anywhere in the exception chain, or torch's write failure on a (nearly) full disk."""
    chain, seen = [], err
    while seen is not None and seen not in chain:  # a chain can loop back on itself
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in chain):
        return True
    if isinstance(err, RuntimeError) and any(words in str(err) for words in _TORCH_WRITE_FAILURES):
        free = _free_bytes(folder)
        return free is not None and free < _NEARLY_FULL_BYTES
    return False


def temp_path(path):
    """Where :func:`atomic_save` writes ``path`` first: ``.<name>.tmp-<pid>`` in the same folder."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f'.{name}.tmp-{os.getpid()}')


# the exact temporary names of :func:`temp_path`, for the start-up cleanup of killed saves
_TEMP_RE = re.compile(r'^\..+\.tmp-\d+$')


def fsync_dir(folder):
    """Make a rename in ``folder`` durable (skipped where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename itself is done
        pass
    finally:
        os.close(fd)


def _remove_quietly(tmp, original):
    """Remove a failed save's temporary file; a failure to do so is logged, never raised over ``original``."""
    try:
        if os.path.exists(tmp):
            os.remove(tmp)
    except OSError as cleanup_err:
        logger.error('Could not remove the temporary file %s after %s: %s: %s', tmp, type(original).__name__,
                     type(cleanup_err).__name__, cleanup_err)


def atomic_save(obj, path, retries=3, write=None):
    """``torch.save`` through a temporary file, ``os.replace`` and a directory fsync; retried like
    BasicSR's save, except on a full disk (:class:`DiskFullError`, at once: a retry cannot help).
    ``write(obj, file)`` replaces ``torch.save`` (safetensors: :mod:`realsr.runtime.model_files`)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path(path)
    for attempt in range(1, retries + 1):
        try:
            with open(tmp, 'wb') as f:
                (write or torch.save)(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(folder)
            return True
        except Exception as err:  # disk full, permissions, interrupted write ...
            disk_full = _is_disk_full(err, folder)
            _remove_quietly(tmp, err)
            if disk_full:
                logger.error('Could not save %s: no space left on device.', path)
                raise DiskFullError(path, _free_bytes(folder)) from err
            if attempt == retries:
                logger.error('Could not save %s after %d attempts (%s: %s); the previous checkpoint is intact.',
                             path, retries, type(err).__name__, err)
                raise
            logger.warning('Saving %s failed (%s); retrying.', path, err)
            time.sleep(0.5)
    return False


def remove_stale_temp_files(folders):
    """Delete the temporary files that killed saves left in ``folders`` (only :func:`temp_path`'s
    names); returns the removed paths. Call it when no save of this experiment can be running."""
    removed = []
    for folder in folders:
        if not folder or not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if _TEMP_RE.match(name) and os.path.isfile(path):
                try:
                    os.remove(path)
                    removed.append(path)
                except OSError as err:
                    logger.warning('Could not remove the stale temporary file %s: %s', path, err)
    if removed:
        logger.info('Removed %d temporary file(s) of interrupted saves: %s', len(removed), ', '.join(removed))
    return removed


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
    state = strip_module_prefix(read_network_file(load_path, param_key))
    own = net.state_dict()
    missing, unexpected, mismatched = state_dict_diff(own, state)
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
        raise NetworkMismatchError('\n'.join(lines))
    for k in mismatched:
        logger.warning('Size different, ignore [%s]: file %s vs network %s', k, tuple(state[k].shape), tuple(own[k].shape))
        state[k + '.ignore'] = state.pop(k)
    if missing or unexpected:
        logger.warning('Loading %s non-strictly: missing %s, unexpected %s', load_path, missing, unexpected)
    net.load_state_dict({k: v for k, v in state.items() if not k.endswith('.ignore')}, strict=False)
    logger.info('Loaded %s [%s] into %s.', load_path, param_key, type(net).__name__)


_STATE_RE = re.compile(r'^(\d+)\.state$')


def load_training_state(path):
    """Load a ``.state`` file. Scheduler states hold a ``collections.Counter``, allowed here."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'training state {path!r} does not exist (check path.resume_state)')
    with torch.serialization.safe_globals([collections.Counter]):
        try:
            return torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:
            raise RuntimeError(f'cannot read training state {path!r}: {type(err).__name__}: {err}') from err


# -- training states of several ranks ---------------------------------------------------------------
# Rank 0's part (RNG states, sampler position, degradation generator, pair pool) sits in ``<iter>.state``
# itself, so a one-process state is what BasicSR and older realsr wrote; every other rank r writes
# ``<iter>.rank<r>.state``. The parts are written first and ``<iter>.state`` last, so a main state on
# disk means every part of it is complete.
class ResumeError(RuntimeError):
    """A training state that cannot continue this run (another world size, other networks, optimizer
    shapes that do not fit); raised before training starts and before the experiment is written to."""


def network_specs(opt):
    """``{'network_g': {'type': ..., <args>}, ...}`` of an option dict, as plain data: stored in a
    training state, so that a resume with other networks is refused before training."""
    return {k: json.loads(json.dumps(v, default=str)) for k, v in opt.items()
            if k.startswith('network_') and isinstance(v, dict)}


def rank_state_path(state_path, rank):
    """``.../<iter>.state`` -> ``.../<iter>.rank<rank>.state`` (rank 0's part is in the main file)."""
    base = state_path[:-len('.state')] if state_path.endswith('.state') else state_path
    return f'{base}.rank{rank}.state'


def _all_ranks_ok(ok):
    """True on every rank when ``ok`` is true on every rank (a collective under DDP)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ok
    device = torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else 'cpu'
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def write_training_state(state_dir, current_iter, shared, own):
    """Write one training state of all ranks; every rank calls it (collective under DDP).

    ``shared`` (used on rank 0 only): what all ranks hold alike (optimizers, schedulers, ...);
    ``own``: this rank's part (its RNG states, sampler position, degradation generator, pool).
    Records ``world_size``; raises on every rank if any rank's part could not be written (the main
    file is then not written, so the previous state stays the newest)."""
    rank, world_size = get_dist_info()
    path = os.path.join(state_dir, f'{current_iter}.state')
    failure = None
    if rank > 0:
        try:
            atomic_save(own, rank_state_path(path, rank))
        except Exception as err:
            failure = err
    parts_ok = _all_ranks_ok(failure is None)
    if failure is not None:
        raise failure
    if not parts_ok:
        raise RuntimeError(f'not writing {path}: another rank could not write its part of the training state '
                           '(see its error); the previous checkpoints are intact')
    if rank == 0:
        state = dict(shared)
        state.update(own)
        state['world_size'] = world_size
        atomic_save(state, path)


def read_rank_state(state_path, rank):
    """This rank's part of the training state at ``state_path`` (rank 0's is the main file)."""
    part = rank_state_path(state_path, rank)
    if not os.path.isfile(part):
        raise FileNotFoundError(f'{part!r} (the part of rank {rank} of the training state {state_path!r}) does not '
                                'exist')
    return load_training_state(part)


def _why_unusable(state_path, state, models_dir, labels):
    """Why the pair (state, its networks, its rank parts) cannot be resumed from, or None."""
    it = state.get('iter') if isinstance(state, dict) else None
    if not isinstance(it, int) or 'optimizers' not in state:
        return f'{state_path} is not a training state (no iter/optimizers)'
    for label in labels:
        net_path = model_files.network_file(models_dir, f'net_{label}', it)
        if net_path is None:
            return f"{os.path.join(models_dir, f'net_{label}_{it}.pth')} is missing"
        try:
            read_network_file(net_path, 'params')
        except Exception as err:
            return f'{net_path} is unreadable ({type(err).__name__}: {err})'
    for rank in range(1, int(state.get('world_size') or 1)):
        try:
            read_rank_state(state_path, rank)
        except Exception as err:
            return f'{rank_state_path(state_path, rank)} is unreadable or missing ({type(err).__name__}: {err})'
    return None


def find_resumable_state(state_dir, models_dir, labels=('g', )):
    """The newest ``<iter>.state`` that is complete and readable with every network file it needs
    (``net_<label>_<iter>``) and, for a multi-rank state, every rank's part.

    Returns ``(path, state, skipped)``: ``path``/``state`` are None when nothing is usable, and
    ``skipped`` says, per newer state passed over, why (also logged as warnings)."""
    skipped = []
    if not os.path.isdir(state_dir):
        return None, None, skipped
    iters = sorted((int(m.group(1)) for m in map(_STATE_RE.match, os.listdir(state_dir)) if m), reverse=True)
    for it in iters:
        path = os.path.join(state_dir, f'{it}.state')
        try:
            state = load_training_state(path)
            reason = _why_unusable(path, state, models_dir, labels)
        except Exception as err:
            reason = f'{path} is unreadable ({err})'
        if reason is None:
            return path, state, skipped
        skipped.append(reason)
        logger.warning('--auto_resume: skipping the checkpoint of iteration %d: %s.', it, reason)
    return None, None, skipped
