"""Regularizers: parameter-free modifiers attached to any arch at named sites (see
:mod:`realsr.regularizers.base`), listed in the option file::

    regularizers:
      - type: ChannelDropout
        p: 0.7
        sites: ['conv_last:input']

They are registered in ``REGULARIZER_REGISTRY`` and imported lazily by it.
"""
import copy

from realsr.registry import REGULARIZER_REGISTRY


def build_regularizers(reg_opts, net):
    """Build every regularizer of ``reg_opts`` (a list of ``{type, **kwargs}``) and attach it to
    ``net`` (the bare module, not a DDP wrapper)."""
    regs = []
    for opt in reg_opts or []:
        opt = copy.deepcopy(dict(opt))
        reg = REGULARIZER_REGISTRY.get(opt.pop('type'))(**opt)
        regs.append(reg.attach(net))
    return regs
