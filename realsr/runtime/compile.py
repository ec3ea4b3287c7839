"""``torch.compile`` for training networks, with its preconditions checked before training starts.

Compilation itself happens at the first forward; :func:`compile_network` only wraps. What can be
known up front is checked here, so a run that cannot compile stops with an error that says why,
instead of failing (or silently running eager) hours later. Saved keys never carry the wrapper's
``_orig_mod.`` prefix (:func:`realsr.runtime.checkpoint.unwrap`).
"""
import logging
import shutil
import sys

import torch

logger = logging.getLogger('realsr')


def compile_problem(device):
    """Why ``torch.compile`` cannot work here, or None."""
    import torch._dynamo
    if not torch._dynamo.is_dynamo_supported():
        return f'torch.compile does not support Python {sys.version.split()[0]} with torch {torch.__version__}'
    if device.type == 'cuda':
        from torch.utils._triton import has_triton
        if not has_triton():
            return 'torch.compile on CUDA needs triton, which is not installed (pip install triton)'
    elif device.type == 'cpu':
        from torch._inductor import config
        compiler = config.cpp.cxx[0] if isinstance(config.cpp.cxx, (tuple, list)) else config.cpp.cxx
        if not any(shutil.which(c) for c in ([compiler] if compiler else []) + ['g++', 'c++', 'clang++']):
            return 'torch.compile on a CPU needs a C++ compiler (g++ or clang++), and none is on PATH'
    else:
        return f'torch.compile is not set up for device {device.type!r} here'
    return None


def compile_allowed(precision):
    """False, with a warning, where compiling is known to train wrongly: Inductor on a CPU under
    bf16 autocast (torch 2.13) returns zero gradients for every layer before RRDBNet's nearest
    upsampling (the trunk never trains, while the loss looks normal); eager bf16 is as fast there
    (scripts/bench_train.py), so the run trains eager."""
    if precision.device_type == 'cpu' and precision.dtype is not None:
        logger.warning('use_compile with mixed precision on a CPU is switched off: torch.compile (Inductor) '
                       'drops gradients under bf16 autocast there (RRDBNet\'s trunk got none), and it adds no '
                       'speed on a CPU. Training eager in bf16.')
        return False
    return True


def compile_network(net, mode, device):
    """``torch.compile(net, mode=mode)``; a ValueError naming ``use_compile`` when it cannot work.
    Shapes are static: training crops have one size (validation runs the eager module)."""
    problem = compile_problem(device)
    if problem:
        raise ValueError(f'use_compile: true, but {problem}. Set use_compile: false to train eager.')
    logger.info('torch.compile(%s, mode=%s): compiled at its first training step.', type(net).__name__, mode)
    return torch.compile(net, mode=mode, dynamic=False)
