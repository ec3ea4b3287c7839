"""Exponential moving average of a network, over its parameters and its buffers.

BasicSR averages parameters only; buffers (e.g. running statistics) are averaged here too, so
the EMA network is a consistent model. ``lerp`` leaves an entry that equals its EMA exactly
unchanged (constant buffers such as attention masks stay bit-identical). Integer buffers are
copied.
"""
import torch

from realsr.engine.checkpoint import unwrap


@torch.no_grad()
def update_ema(ema_net, net, decay):
    """``ema = decay * ema + (1 - decay) * net`` for every parameter and floating buffer."""
    src = unwrap(net).state_dict()
    for name, ema_value in unwrap(ema_net).state_dict().items():
        value = src[name].to(ema_value.device)
        if ema_value.dtype.is_floating_point:
            ema_value.lerp_(value.to(ema_value.dtype), 1.0 - decay)
        else:
            ema_value.copy_(value)
