"""The training-step mechanics every model shares.

A model states what it computes; this module does the rest, the same way for every network
group (the generator with its predictor, the discriminator):

    def optimize_parameters(self, current_iter):
        with self.train_step.micro_batch() as step:
            output = step.forward(self.net_g, self.lq)   # autocast + channels_last; output in fp32
            l_total = ...                                # losses from fp32 tensors
            step.backward('g', l_total, loss_dict)       # / accum_iter, fp16 loss scaling
            step.log(loss_dict)

Leaving the block after the last micro-batch of an iteration (``accum_iter`` of them; DDP's
``no_sync`` on the others) steps each group that got a backward: unscale (fp16), the gradient
norm (logged as ``grad_norm_<group>``), clipping, the non-finite guard, the optimizer step and the
group's EMA.

The hot path reads nothing back from the device. A step with a non-finite loss or gradient is
skipped on the device: fused optimizers take the flag as ``found_inf`` (as under a GradScaler) and
the EMA weight is multiplied by it; other optimizers read the flag (one host sync a step). Under
DDP the flag is all-reduced, so every rank skips together. :meth:`TrainStep.check` reads the
counters back (the loop calls it at ``print_freq`` and before each checkpoint), logs what was
skipped and why, and raises :class:`NonFiniteError` after ``nonfinite_max_skips`` consecutive skips.
"""
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from realsr.runtime.checkpoint import unwrap
from realsr.runtime.ema import update_ema

logger = logging.getLogger('realsr')


class NonFiniteError(RuntimeError):
    """Too many consecutive optimizer steps had a NaN/Inf loss or gradient."""


# -- precision -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Precision:
    """What the networks compute in: ``dtype`` None is fp32; ``channels_last`` for 4-D tensors."""
    device_type: str = 'cpu'
    dtype: torch.dtype = None
    channels_last: bool = False

    @property
    def needs_scaler(self):
        return self.dtype == torch.float16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def name(self):
        return {None: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[self.dtype] + (
            ' + channels_last' if self.channels_last else '')


def bf16_is_fast(device_type):
    """Whether the device has bf16 units (otherwise autocast to bf16 runs slower than fp32)."""
    if device_type == 'cuda':
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == 'cpu':
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(settings, device_type, archs=(), bf16_supported=None):
    """The :class:`Precision` of a run from its step settings, the device type and the arch
    classes it trains. Returns ``(precision, warnings)``; raises ValueError for fp16 on a CPU.

    - An arch with ``fp16_overflows = True`` (SwinIR, DRCT: attention logits overflow fp16) runs
      in bf16 when fp16 is asked for.
    - fp16 on a CPU is refused (no fp16 autocast there); bf16 is the CPU's mixed precision.
    - bf16 on a device without bf16 units runs in fp32 (emulated bf16 would crawl).
    """
    warnings = []
    dtype = None
    if settings.use_amp:
        dtype = torch.bfloat16 if settings.amp_bf16 else torch.float16
    if dtype == torch.float16:
        risky = sorted({a.__name__ for a in archs if getattr(a, 'fp16_overflows', False)})
        if risky:
            warnings.append(f"{', '.join(risky)} overflow in fp16 (attention logits): training in bf16 instead "
                            '(set amp_bf16: true to say so)')
            dtype = torch.bfloat16
    if dtype == torch.float16 and device_type == 'cpu':
        raise ValueError('use_amp with fp16 cannot run on a CPU: set amp_bf16: true for bf16 mixed precision '
                         '(or use_amp: false)')
    if dtype == torch.bfloat16:
        fast = bf16_is_fast(device_type) if bf16_supported is None else bf16_supported
        if not fast:
            warnings.append(f'this {device_type} has no fast bf16 units: training in fp32 instead of bf16')
            dtype = None
    return Precision(device_type, dtype, bool(settings.use_channels_last)), warnings


def to_float32(out):
    """Network outputs back to fp32 (tensors, or tuples/lists/dicts of them), so that losses and
    metrics never run in reduced precision."""
    if torch.is_tensor(out):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, (tuple, list)):
        return type(out)(to_float32(o) for o in out)
    if isinstance(out, dict):
        return type(out)((k, to_float32(v)) for k, v in out.items())
    return out


def to_channels_last(x):
    if torch.is_tensor(x) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def module_to_channels_last(net):
    """``net`` with its 4-D parameters and buffers in channels_last, in place. Unlike
    ``net.to(memory_format=...)`` it leaves tensors of other ranks alone (the 5-D expert kernels
    of DASR's dynamic convolutions)."""
    for tensor in list(net.parameters()) + list(net.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return net


# -- one optimizer and what it trains --------------------------------------------------------
class _Group:
    """One optimizer, its networks, its optional EMA, its fp16 scaler and its guard counters."""

    def __init__(self, name, nets, optimizer, ema, scaler, device):
        self.name = name
        self.nets = list(nets)
        self.optimizer = optimizer
        self.ema = ema  # (ema_net, source_net, decay) or None
        self.scaler = scaler
        self.params = [p for net in self.nets for p in net.parameters() if p.requires_grad]
        zero = torch.zeros((), device=device)
        self.loss_bad = zero.clone()         # this iteration: a non-finite loss (any micro-batch)
        self.consecutive = zero.clone()      # consecutive skipped steps
        self.max_consecutive = zero.clone()  # since the last check
        self.skipped = zero.clone()          # since the last check
        self.bad_names = {}                  # name -> flag, since the last check
        self.active = False                  # got a backward in this iteration

    def flag(self, name, bad):
        self.bad_names[name] = self.bad_names[name].logical_or(bad) if name in self.bad_names else bad

    def state_dict(self):
        return {'scaler': self.scaler.state_dict() if self.scaler is not None else None,
                'consecutive': self.consecutive.cpu()}

    def load_state_dict(self, state):
        if self.scaler is not None:
            if state.get('scaler'):
                self.scaler.load_state_dict(state['scaler'])
            else:
                logger.warning('The training state has no fp16 grad scaler for %s: it starts afresh.', self.name)
        self.consecutive.copy_(state['consecutive'])


class TrainStep:
    """Autocast, channels_last, grad scaling, accumulation with ``no_sync``, clipping, the
    non-finite guard, the optimizer step and EMA, for the network groups a model registers with
    :meth:`add_group`."""

    def __init__(self, precision=Precision(), accum_iter=1, clip_max_norm=None, max_skips=10,
                 device=torch.device('cpu')):
        self.precision = precision
        self.accum_iter = int(accum_iter)
        self.clip_max_norm = clip_max_norm
        self.max_skips = int(max_skips)
        self.device = torch.device(device)
        self.groups = OrderedDict()
        self.micro = 0
        self.log_dict = OrderedDict()
        self._log_sums = OrderedDict()

    # -- set-up ------------------------------------------------------------------------------
    def add_group(self, name, nets, optimizer, ema=None):
        """Register ``optimizer`` training ``nets`` as group ``name`` ('g', 'd'); ``ema`` is
        ``(ema_net, source_net, decay)`` to update after each step of this group."""
        scaler = None
        if self.precision.needs_scaler:
            scaler = torch.amp.GradScaler(self.device.type)
        self.groups[name] = _Group(name, nets, optimizer, ema, scaler, self.device)

    def state_dict(self):
        return {name: g.state_dict() for name, g in self.groups.items()}

    def load_state_dict(self, state):
        for name, g in self.groups.items():
            if name in (state or {}):
                g.load_state_dict(state[name])
            elif g.scaler is not None:
                logger.warning('The training state has no fp16 grad scaler for %s: it starts afresh.', name)

    # -- inside a micro-batch ----------------------------------------------------------------
    def autocast(self):
        return self.precision.autocast()

    def forward(self, net, *args, **kwargs):
        """``net(*args, **kwargs)`` under autocast, 4-D inputs in channels_last when asked; the
        outputs come back in fp32."""
        if self.precision.channels_last:
            args = tuple(to_channels_last(a) for a in args)
        with self.precision.autocast():
            return to_float32(net(*args, **kwargs))

    @contextlib.contextmanager
    def micro_batch(self):
        """One micro-batch. Gradients are zeroed before the first of an iteration; DDP networks
        skip their gradient all-reduce (``no_sync``) on all but the last; leaving the last steps."""
        if self.micro == 0:
            for g in self.groups.values():
                g.optimizer.zero_grad(set_to_none=True)
                g.loss_bad.zero_()
                g.active = False
            self._log_sums = OrderedDict()
        last = self.micro == self.accum_iter - 1
        with contextlib.ExitStack() as stack:
            if not last:
                for g in self.groups.values():
                    for net in g.nets:
                        if isinstance(net, DistributedDataParallel):
                            stack.enter_context(net.no_sync())
            yield self
        self.micro += 1
        if last:
            self.micro = 0
            self._finish_iteration()

    def backward(self, name, loss, terms=None):
        """Backward of group ``name``'s total ``loss``; ``terms`` (name -> loss) say which term
        was non-finite when a step is skipped."""
        g = self.groups[name]
        g.active = True
        checked = dict(terms or {}) or {f'loss of {name}': loss}
        bad = torch.stack([~torch.isfinite(v.detach()).all() for v in checked.values() if torch.is_tensor(v)]
                          + [~torch.isfinite(loss.detach())])
        g.loss_bad.logical_or_(bad.any())
        for i, term in enumerate(k for k, v in checked.items() if torch.is_tensor(v)):
            g.flag(term, bad[i])
        loss = loss / self.accum_iter if self.accum_iter > 1 else loss
        if g.scaler is not None:
            loss = g.scaler.scale(loss)
        loss.backward()

    def log(self, values):
        """Values to log for this iteration (averaged over its micro-batches); kept on the device."""
        for k, v in values.items():
            v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v), device=self.device)
            self._log_sums[k] = self._log_sums[k] + v if k in self._log_sums else v

    # -- the optimizer step ------------------------------------------------------------------
    def _finish_iteration(self):
        log = OrderedDict((k, v / self.accum_iter if self.accum_iter > 1 else v) for k, v in self._log_sums.items())
        for g in self.groups.values():
            if g.active:
                log[f'grad_norm_{g.name}'] = self._step_group(g)
        self.log_dict = log

    def _grad_norms(self, g):
        per_net = []
        for net in g.nets:
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            if grads:
                per_net.append((net, torch.nn.utils.get_total_norm(grads, foreach=True)))
        if not per_net:
            return [], torch.zeros((), device=self.device)
        total = torch.linalg.vector_norm(torch.stack([n.float() for _, n in per_net]))
        return per_net, total

    @torch.no_grad()
    def _step_group(self, g):
        if g.scaler is not None:
            g.scaler.unscale_(g.optimizer)
        per_net, norm = self._grad_norms(g)
        for net, net_norm in per_net:
            g.flag(f'gradients of {type(unwrap(net)).__name__}', ~torch.isfinite(net_norm))
        found = torch.logical_or(g.loss_bad, ~torch.isfinite(norm)).float()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(found, op=dist.ReduceOp.MAX)  # every rank skips together
        # Under fp16 an overflowing gradient with finite losses is the grad scaler's business (it
        # backs off and the step after recovers, many times at start-up): only non-finite losses
        # make the streak that stops the run.
        streak = found
        if g.scaler is not None:
            streak = g.loss_bad.float()
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(streak, op=dist.ReduceOp.MAX)
        if self.clip_max_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(g.params, self.clip_max_norm, norm, foreach=True)
        self._guarded_optimizer_step(g.optimizer, found)
        if g.scaler is not None:
            g.scaler.update()
        if g.ema is not None:
            ema_net, source, decay = g.ema
            update_ema(ema_net, source, decay, skip=found)
        g.skipped += found
        g.consecutive.add_(streak).mul_(streak)  # reset to 0 by a step that was taken
        torch.maximum(g.max_consecutive, g.consecutive, out=g.max_consecutive)
        return norm.detach()

    @staticmethod
    def _guarded_optimizer_step(optimizer, found):
        if getattr(optimizer, '_step_supports_amp_scaling', False):
            # fused optimizers skip in the kernel when found_inf is 1: nothing is read back
            optimizer.grad_scale, optimizer.found_inf = None, found
            try:
                optimizer.step()
            finally:
                del optimizer.grad_scale, optimizer.found_inf
        elif not bool(found):  # one host sync per step for optimizers without that support
            optimizer.step()

    # -- read back at print_freq and before checkpoints --------------------------------------
    def check(self, current_iter):
        """Log the steps skipped since the last check and why; raise :class:`NonFiniteError`
        after ``max_skips`` consecutive skips. Reads the device counters (a host sync)."""
        for g in self.groups.values():
            skipped = int(g.skipped)
            if skipped:
                bad = [name for name, flag in g.bad_names.items() if bool(flag)]
                logger.warning('iter %d: skipped %d optimizer step(s) of %s since the last check: non-finite %s.',
                               current_iter, skipped, _group_label(g), ', '.join(bad) or 'values')
                if int(g.max_consecutive) >= self.max_skips:
                    raise _logged(NonFiniteError(
                        f'{int(g.max_consecutive)} consecutive optimizer steps of {_group_label(g)} had a non-finite '
                        f"({', '.join(bad) or 'loss or gradient'}) up to iter {current_iter}: training stopped. "
                        'The weights are those of the last good step; no checkpoint with NaN/Inf was written. Lower '
                        'train.optim_*.lr, set train.grad_clip: true, or check the data; resume with --auto_resume.'))
            g.skipped.zero_()
            g.max_consecutive.copy_(g.consecutive)
            g.bad_names = {}


def _logged(err):
    logger.error('%s', err)
    return err


def _group_label(g):
    return f"{g.name} ({', '.join(type(unwrap(n)).__name__ for n in g.nets)})"
