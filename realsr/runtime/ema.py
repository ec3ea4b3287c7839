"""Exponential moving average of a network, over its parameters and its buffers.

BasicSR averages parameters only; buffers (e.g. running statistics) are averaged here too, so
the EMA network is a consistent model. ``lerp`` leaves an entry that equals its EMA exactly
unchanged (constant buffers such as attention masks stay bit-identical). Integer buffers are
copied. The floating entries are updated by one fused ``_foreach_lerp_`` per device and dtype
rather than a Python loop of kernels.
"""
from collections import defaultdict

import torch

from realsr.runtime.checkpoint import unwrap


@torch.no_grad()
def update_ema(ema_net, net, decay, skip=None):
    """``ema = decay * ema + (1 - decay) * net`` for every parameter and floating buffer.

    ``skip``: an optional 0-d tensor on the device; where it is 1 the EMA is left unchanged (a
    step the non-finite guard skipped), without reading it back to the host.
    """
    src = unwrap(net).state_dict(keep_vars=True)
    groups = defaultdict(lambda: ([], []))
    for name, ema_value in unwrap(ema_net).state_dict(keep_vars=True).items():
        value = src[name].detach()
        ema_value = ema_value.detach()
        if ema_value.dtype.is_floating_point:
            if value.device != ema_value.device or value.dtype != ema_value.dtype:
                value = value.to(ema_value.device, ema_value.dtype)
            targets, sources = groups[(ema_value.device, ema_value.dtype)]
            targets.append(ema_value)
            sources.append(value)
        else:
            ema_value.copy_(value)
    for (device, dtype), (targets, sources) in groups.items():
        if skip is None:
            torch._foreach_lerp_(targets, sources, 1.0 - decay)
        else:
            weight = (1.0 - skip.to(device, dtype)) * (1.0 - decay)
            torch._foreach_lerp_(targets, sources, weight)
