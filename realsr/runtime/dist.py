"""torch.distributed set-up: torchrun / torch.distributed.launch (``--launcher pytorch``) and Slurm.

NCCL with one GPU per process when CUDA is used, gloo on CPU, unless ``dist_params.backend`` says
otherwise. ``LOCAL_RANK`` picks the device
(torchrun sets it; the old launcher's ``--local_rank``/``--local-rank`` flag is also honoured).
"""
import atexit
import datetime
import functools
import gc
import os
import subprocess

import torch
import torch.distributed as dist

from realsr import option_defs as defs


# Backends torch.distributed knows that work on a CPU-only process, and those that need CUDA.
_CPU_BACKENDS = ('gloo', 'mpi', 'ucc')
_CUDA_BACKENDS = ('nccl', 'gloo', 'mpi', 'ucc')


def resolve_backend(backend, use_cuda):
    """The process-group backend for ``dist_params.backend`` (``None``: nccl with CUDA, gloo
    without). Raises ``ValueError`` naming the key when it cannot work on the device."""
    if backend is None:
        return 'nccl' if use_cuda else 'gloo'
    name = str(backend).lower()
    known = _CUDA_BACKENDS if use_cuda else _CPU_BACKENDS
    if name not in known:
        where = 'with CUDA' if use_cuda else 'on a CPU (num_gpu: 0 or no GPU visible)'
        raise ValueError(f"dist_params.backend: {backend!r} cannot work {where}; use one of {', '.join(known)} "
                         f"or leave it out ({'nccl' if use_cuda else 'gloo'} is the default)")
    return name


def init_dist(launcher, backend=None, port=None, use_cuda=None, local_rank=None, timeout=None):
    """Initialise the default process group; returns the device this process should use.
    ``backend`` (``dist_params.backend``) is honoured for every launcher; see :func:`resolve_backend`."""
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    backend = resolve_backend(backend, use_cuda)
    if launcher == 'pytorch':
        for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
            if var not in os.environ:
                raise RuntimeError(f'--launcher pytorch needs the environment variable {var}; start the job with '
                                   'torchrun --nproc_per_node=N realsr/train.py -opt X.yml --launcher pytorch')
        local_rank = int(os.environ.get('LOCAL_RANK', local_rank or 0))
    elif launcher == 'slurm':
        proc_id = int(os.environ['SLURM_PROCID'])
        ntasks = int(os.environ['SLURM_NTASKS'])
        node_list = os.environ['SLURM_NODELIST']
        addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ['MASTER_PORT'] = str(port or os.environ.get('MASTER_PORT', 29500))
        os.environ.setdefault('MASTER_ADDR', addr)
        os.environ['WORLD_SIZE'] = str(ntasks)
        os.environ['RANK'] = str(proc_id)
        gpus = max(torch.cuda.device_count(), 1)
        local_rank = int(os.environ.get('SLURM_LOCALID', proc_id % gpus))
        os.environ['LOCAL_RANK'] = str(local_rank)
    else:
        raise ValueError(f"launcher must be none, pytorch or slurm, got {launcher!r}")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device('cuda', torch.cuda.current_device())
    else:
        device = torch.device('cpu')
    if not dist.is_initialized():
        init_process_group(backend, timeout)
    return device


DEFAULT_TIMEOUT_S = defs.default(defs.DIST_PARAMS, 'timeout')  # dist_params.timeout, defined in option_defs
# The rendezvous waits at least this long, so that ranks which start a few seconds apart (imports,
# dataset scans on a busy node) still meet when dist_params.timeout is short.
_RENDEZVOUS_MIN_S = 120


def dist_timeout(dist_params):
    """``dist_params.timeout`` in seconds (the default when unset)."""
    return float(defs.value(dist_params, defs.DIST_PARAMS, 'timeout'))


def init_process_group(backend, timeout=None):
    """The default process group, whose collectives fail after ``timeout`` seconds. A gloo group
    is also destroyed at interpreter exit (:func:`_destroy_gloo_at_exit`)."""
    timeout = float(DEFAULT_TIMEOUT_S if timeout is None else timeout)
    set_later = timeout < _RENDEZVOUS_MIN_S and hasattr(dist.distributed_c10d, '_set_pg_timeout')
    first = max(timeout, _RENDEZVOUS_MIN_S) if set_later else timeout
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=first))
    if set_later:
        dist.distributed_c10d._set_pg_timeout(datetime.timedelta(seconds=timeout))
    atexit.register(_destroy_gloo_at_exit)  # idempotent: a second registration (another init) is harmless


def _destroy_gloo_at_exit():
    """A gloo process group left to interpreter exit aborts the process now and then, after all the
    work is done ("terminate called without an active exception": its threads are torn down in the
    wrong order). Measured on a 2-core machine with two torchrun ranks, rank 1 finishing 0.3 s after
    rank 0: 10 aborts in 20 runs that only all-reduce and exit, 0 in 20 with the destroy. This covers
    scripts that call train_pipeline/test_pipeline themselves; the command-line entry points destroy
    the group earlier (:func:`shutdown`). Not for NCCL: destroying it after a failed collective can
    hang, so an NCCL group is destroyed only after a clean end."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == 'gloo':
        shutdown()


def shutdown():
    """Destroy the process group at the end of a run (see :func:`_destroy_gloo_at_exit` for why).
    Garbage is collected first: DDP wrappers also hold the group, and with a DDP model alive the
    destroy alone still aborted 5 of 40 runs (0 of 80 with the collection first).
    Local only: no collective, so it never waits for another rank."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def get_dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def master_only(func):
    """Run ``func`` on rank 0 only (other ranks get None)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        rank, _ = get_dist_info()
        if rank == 0:
            return func(*args, **kwargs)
        return None

    return wrapper


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def reduce_loss_dict(loss_dict):
    """Average scalar losses over ranks (for logging only); returns Python floats."""
    names = list(loss_dict)
    values = torch.stack([torch.as_tensor(loss_dict[n], dtype=torch.float32).detach().reshape(()) for n in names])
    _, world = get_dist_info()
    if world > 1:
        values = values.to(_collective_device())
        dist.all_reduce(values)
        values /= world
    return {n: float(v) for n, v in zip(names, values.cpu())}


def broadcast_object(obj, src=0):
    _, world = get_dist_info()
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _collective_device():
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')
