"""What every model shares: device placement, optimizers and schedulers, learning-rate
updates with warm-up, checkpoint and resume plumbing. What a training step does lives in the
subclasses (``SRModel`` ...); inference on an LQ batch is their ``infer``, which
:mod:`realsr.engine.validator` calls (it owns metrics and the best-metric record).
"""
import inspect
import logging
from collections import OrderedDict

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from realsr import option_defs as defs
from realsr.option_defs import fill_section_defaults, with_defaults
from realsr.runtime import checkpoint, model_files
from realsr.runtime.compile import compile_allowed, compile_network
from realsr.runtime.dist import master_only, reduce_loss_dict
from realsr.runtime.step_options import read_step_options
from realsr.runtime.train_step import TrainStep, module_to_channels_last, resolve_precision
from realsr.models.lr_scheduler import build_scheduler
from realsr.registry import ARCH_REGISTRY

logger = logging.getLogger('realsr')


def optimizer_mismatch(optimizer, saved, names=None):
    """Why the saved optimizer state ``saved`` cannot drive ``optimizer``'s parameters (group sizes,
    or a per-parameter state tensor, e.g. Adam's ``exp_avg``, whose shape differs from its
    parameter's), or None. ``names`` maps ``id(param)`` to a name for the message."""
    names = names or {}
    groups, saved_groups = optimizer.param_groups, saved.get('param_groups', [])
    if len(groups) != len(saved_groups):
        return f'has {len(saved_groups)} parameter group(s) in the state, {len(groups)} in the model'
    for g, (group, saved_group) in enumerate(zip(groups, saved_groups)):
        if len(group['params']) != len(saved_group['params']):
            return (f"group {g} holds {len(saved_group['params'])} parameters in the state, "
                    f"{len(group['params'])} in the model")
        for param, key in zip(group['params'], saved_group['params']):
            for entry, value in (saved.get('state', {}).get(key) or {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                    name = names.get(id(param), f'parameter {key}')
                    return (f'has {entry} of shape {tuple(value.shape)} in the state for {name}, whose shape in '
                            f'the model is {tuple(param.shape)}')
    return None


class BaseModel:
    """Base class of the models. Subclasses set ``self.net_g`` (and more networks), fill
    ``self.optimizers`` and implement ``feed_data``, ``optimize_parameters``, ``infer`` (LQ -> SR,
    no side effects), ``test``, ``get_current_visuals`` and ``save``."""

    def __init__(self, opt):
        self.opt = fill_section_defaults(opt, 'train')  # as parse_options does, for options built in code
        self.device = torch.device(opt.get('device') or ('cuda' if opt.get('num_gpu', 0) != 0 else 'cpu'))
        self.is_train = defs.value(opt, defs.TOP_LEVEL, 'is_train')
        self.schedulers = []
        self.optimizers = []
        self.step_settings = read_step_options(opt)
        self.train_step = self.build_train_step() if self.is_train else TrainStep(device=self.device)

    def build_train_step(self):
        """The shared step mechanics with this run's precision, accumulation, clipping and guard."""
        settings = self.step_settings
        archs = [ARCH_REGISTRY.get(v['type']) for k, v in self.opt.items()
                 if k.startswith('network_') and isinstance(v, dict) and 'type' in v]
        precision, warnings = resolve_precision(settings, self.device.type, archs)
        for warning in warnings:
            logger.warning('%s', warning)
        if settings.use_amp or settings.use_channels_last:
            logger.info('Training precision: %s.', precision.name())
        self.compile_nets = settings.use_compile and compile_allowed(precision)
        return TrainStep(precision, settings.accum_iter,
                         settings.grad_clip_max_norm if settings.grad_clip else None,
                         settings.nonfinite_max_skips, self.device)

    @property
    def log_dict(self):
        """The last iteration's logged values (device tensors; see :meth:`get_current_log`)."""
        return self.train_step.log_dict

    # -- networks ------------------------------------------------------------------------
    def model_to_device(self, net, compile_net=False):
        """Move ``net`` to the device (channels_last when asked), ``torch.compile`` it when
        ``compile_net`` and ``use_compile`` (before the DDP wrap), and wrap it for DDP/DataParallel."""
        net = net.to(self.device)
        if self.is_train and self.train_step.precision.channels_last:
            net = module_to_channels_last(net)
        if compile_net and self.is_train and self.compile_nets:
            net = compile_network(net, self.step_settings.compile_mode, self.device)
        if self.opt.get('dist') and self.is_train:  # testing runs each rank's module on its own
            device_ids = [self.device.index] if self.device.type == 'cuda' else None
            # an arch whose buffers never change in training (SwinIR/DRCT: relative position index,
            # shift masks) declares constant_buffers; re-broadcasting them every forward is waste
            net = DistributedDataParallel(net, device_ids=device_ids,
                                          find_unused_parameters=with_defaults(self.opt, '')['find_unused_parameters'],
                                          broadcast_buffers=not getattr(checkpoint.unwrap(net), 'constant_buffers',
                                                                        False))
        elif self.uses_data_parallel():
            net = DataParallel(net)
        return net

    def uses_data_parallel(self):
        """BasicSR's DataParallel: ``num_gpu > 1`` on CUDA without a launcher (kept for old files;
        DDP through torchrun is faster and is what the regularizers need)."""
        return not self.opt.get('dist') and self.device.type == 'cuda' and (self.opt.get('num_gpu') or 1) > 1

    def print_network(self, net):
        bare = checkpoint.unwrap(net)
        n_params = sum(p.numel() for p in bare.parameters())
        logger.info('Network: %s, with parameters: %s', type(bare).__name__, f'{n_params:,d}')

    def load_pretrained(self, net, key):
        """Load ``path.pretrain_network_<key>`` with ``param_key_<key>`` / ``strict_load_<key>``."""
        path_opt = self.opt.get('path', {})
        load_path = path_opt.get(f'pretrain_network_{key}')
        if load_path is None:
            return False
        param_key = path_opt.get(f'param_key_{key}', 'params')
        checkpoint.load_network(net, load_path, path_opt.get(f'strict_load_{key}', True), param_key)
        return True

    # -- optimizers and schedulers ---------------------------------------------------------
    def get_optimizer(self, optim_opt, params):
        """``torch.optim.<type>``; fused (one kernel for all tensors, and a non-finite step
        skipped on the device) where PyTorch offers it and the file sets neither fused nor foreach."""
        optim_opt = dict(optim_opt)
        optim_type = optim_opt.pop('type')
        cls = getattr(torch.optim, optim_type, None)
        if cls is None:
            raise ValueError(f'optimizer {optim_type!r} is not in torch.optim')
        params = list(params)
        if ('fused' in inspect.signature(cls).parameters and 'fused' not in optim_opt and 'foreach' not in optim_opt
                and not optim_opt.get('differentiable') and self.device.type in ('cpu', 'cuda')
                and all(p.is_floating_point() for p in params)):
            optim_opt['fused'] = True
        return cls(params, **optim_opt)

    def setup_schedulers(self):
        sched_opt = self.opt['train'].get('scheduler')
        if sched_opt is None:
            return
        self.schedulers = [build_scheduler(optimizer, sched_opt) for optimizer in self.optimizers]

    def _set_lr(self, lr_groups_l):
        for optimizer, lr_groups in zip(self.optimizers, lr_groups_l):
            for group, lr in zip(optimizer.param_groups, lr_groups):
                group['lr'] = lr

    def update_learning_rate(self, current_iter, warmup_iter=-1):
        """BasicSR's schedule: every scheduler steps from the second iteration on; during
        warm-up the lr is ``initial_lr * current_iter / warmup_iter``."""
        if current_iter > 1:
            for scheduler in self.schedulers:
                scheduler.step()
        if current_iter < warmup_iter:
            self._set_lr([[g['initial_lr'] * current_iter / warmup_iter for g in opt.param_groups]
                          for opt in self.optimizers])

    def get_current_learning_rate(self):
        return [group['lr'] for group in self.optimizers[0].param_groups]

    def get_current_log(self):
        """The last iteration's logged values as floats, averaged over ranks. A host sync and, under
        DDP, a collective: every rank calls it at the same iterations (``print_freq``)."""
        return OrderedDict(reduce_loss_dict(self.log_dict)) if self.log_dict else OrderedDict()

    # -- checkpoints ---------------------------------------------------------------------
    @master_only
    def save_network(self, nets, net_label, current_iter, param_keys='params'):
        name = 'latest' if current_iter == -1 else current_iter
        fmt = model_files.save_checkpoint_format(self.opt)
        path = model_files.network_file(self.opt['path']['models'], net_label, name, fmt)
        # safetensors carry the arch (network_<label> of the option file) and the iteration in their metadata
        network_opt = self.opt.get(f"network_{net_label[len('net_'):]}") if net_label.startswith('net_') else None
        metadata = model_files.arch_metadata(network_opt, current_iter) if fmt == 'safetensors' else None
        checkpoint.save_network(nets, path, param_keys, metadata=metadata)

    def save_training_state(self, epoch, current_iter, extra_state=None, rank_state=None):
        """Write ``training_states/<iter>.state``; every rank calls it (collective under DDP).

        ``extra_state`` (taken from rank 0): run-wide entries, e.g. the validator's best-metric record;
        ``rank_state``: this rank's own entries (its RNG states, sampler position), which, with
        :meth:`extra_training_state`, are saved per rank and restored on the same rank."""
        if current_iter == -1:
            return
        own = dict(rank_state or {})
        own.update(self.extra_training_state())
        shared = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'train_step': self.train_step.state_dict(),  # fp16 grad scalers, the guard's skip streak
            'networks': checkpoint.network_specs(self.opt),  # checked on resume against the option file
        }
        shared.update(extra_state or {})
        checkpoint.write_training_state(self.opt['path']['training_states'], current_iter, shared, own)

    def extra_training_state(self):
        """What a model needs besides optimizers and schedulers to resume exactly (e.g. the
        degradation generator and the training-pair pool); stored in the ``.state`` file."""
        return {}

    def load_extra_training_state(self, state):
        """Restore what :meth:`extra_training_state` saved."""

    def resume_training(self, resume_state):
        if len(resume_state['optimizers']) != len(self.optimizers):
            raise checkpoint.ResumeError(f"the training state has {len(resume_state['optimizers'])} optimizer(s), "
                                         f'the model {len(self.optimizers)}: was it saved by another model_type?')
        if len(resume_state['schedulers']) != len(self.schedulers):
            raise checkpoint.ResumeError(f"the training state has {len(resume_state['schedulers'])} scheduler(s), "
                                         f'the model {len(self.schedulers)}: was train.scheduler changed?')
        names = {id(p): f'{attr}.{name}' for attr, net in vars(self).items()
                 if attr.startswith('net_') and isinstance(net, torch.nn.Module)
                 for name, p in checkpoint.unwrap(net).named_parameters()}
        for i, (o, s) in enumerate(zip(self.optimizers, resume_state['optimizers'])):
            problem = optimizer_mismatch(o, s, names)
            if problem:
                raise checkpoint.ResumeError(f'{self.opt["path"].get("resume_state")} does not fit this model: '
                                             f'optimizer {i} {problem}; was it written by another experiment or '
                                             'architecture?')
        for o, s in zip(self.optimizers, resume_state['optimizers']):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, resume_state['schedulers']):
            sch.load_state_dict(s)
        self.train_step.load_state_dict(resume_state.get('train_step'))
        self.load_extra_training_state(resume_state)
