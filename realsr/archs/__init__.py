"""Network architectures (BasicSR constructor arguments and state-dict keys).

One module per family: ``srresnet_arch`` (MSRResNet, MSRResNet_details) and ``rrdbnet_arch``
(RRDBNet); shared blocks live in ``arch_util``. No arch module is imported here: the arch registry
(:data:`realsr.registry.ARCH_REGISTRY`) imports the family modules on first lookup, so
``import realsr.archs`` stays cheap and one broken module cannot break the others::

    from realsr.registry import ARCH_REGISTRY
    net = ARCH_REGISTRY.get('RRDBNet')(num_in_ch=3, num_out_ch=3, scale=4)
"""

import copy

from realsr.registry import ARCH_REGISTRY


def build_network(opt):
    """Build an arch from ``{type: Name, **kwargs}`` (the ``network_*`` sections)."""
    opt = copy.deepcopy(dict(opt))
    network_type = opt.pop('type')
    return ARCH_REGISTRY.get(network_type)(**opt)
