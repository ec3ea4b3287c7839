"""The regularizer interface: parameter-free modifiers attached to a network at named sites.

A *site* names a module of the network and a side: ``'conv_last:input'`` acts on the features
entering ``conv_last`` (a forward pre-hook), ``'body.*.conv1:output'`` on what each matching
module returns (a forward hook). Module names follow ``net.named_modules()``; ``*``/``?``/``[..]``
are glob patterns. A regularizer:

* has no parameters or buffers, so checkpoint keys never change;
* acts only while the hooked module is in training mode (``net.eval()`` is the plain arch);
* may depend on the iteration through :meth:`set_iteration` (closed form, so resume is exact);
* may return extra loss terms from :meth:`losses` (logged under their own names);
* may ask the model for ``num_views`` independently degraded views of each GT (the model puts
  them one after another in the batch: ``[view 1; view 2]``).
"""
import fnmatch

SIDES = ('input', 'output')


def parse_site(site, default_side='input'):
    name, _, side = str(site).partition(':')
    side = side or default_side
    if side not in SIDES:
        raise ValueError(f"regularizer site {site!r}: the side after ':' must be input or output")
    return name, side


def resolve_sites(net, sites, default_side='input'):
    """[(site string, module name, module, side)] for every module matching each site; a site
    that matches nothing raises a ValueError listing the network's module names that would fit."""
    modules = dict(net.named_modules())
    resolved = []
    for site in sites:
        pattern, side = parse_site(site, default_side)
        names = [n for n in modules if n and fnmatch.fnmatchcase(n, pattern)]
        if not names:
            leaves = [n for n, m in modules.items() if n and not list(m.children())]
            close = [n for n in leaves if pattern.split('.')[-1].strip('*?') in n][:12]
            raise ValueError(f"regularizer site '{site}' matches no module of {type(net).__name__}. "
                             + (f"Modules that look close: {', '.join(close)}. " if close else '')
                             + f"Its modules include: {', '.join(leaves[:30])}" + (' ...' if len(leaves) > 30 else ''))
        resolved += [(site, n, modules[n], side) for n in names]
    return resolved


class Regularizer:
    """Base class. Subclasses implement :meth:`apply` (what happens to the features at a site in
    training mode) and optionally :meth:`set_iteration` and :meth:`losses`."""

    default_sites = ('conv_last:input', )
    num_views = 1

    def __init__(self, sites=None):
        self.sites = list(sites) if sites is not None else list(self.default_sites)
        self._handles = []
        self.attached = []  # [(site, module name, side)]

    # -- attaching --------------------------------------------------------------------------
    def attach(self, net):
        for index, (site, name, module, side) in enumerate(resolve_sites(net, self.sites)):
            self.attached.append((site, name, side))
            if side == 'input':
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(index, name)))
            else:
                self._handles.append(module.register_forward_hook(self._post_hook(index, name)))
        return self

    def detach(self):
        for handle in self._handles:
            handle.remove()
        self._handles, self.attached = [], []

    def _pre_hook(self, index, name):

        def hook(module, args):
            if not module.training:
                return None
            return (self.apply(args[0], index, name), ) + tuple(args[1:])

        return hook

    def _post_hook(self, index, name):

        def hook(module, args, output):
            if not module.training:
                return None
            return self.apply(output, index, name)

        return hook

    # -- what subclasses define -------------------------------------------------------------
    def apply(self, x, index, name):
        """Return the (possibly modified) features ``x`` at attached site ``index``."""
        return x

    def set_iteration(self, current_iter):
        """Update schedules; called by the model before each training step."""

    def losses(self):
        """Extra loss terms of the last forward pass: ``{name: scalar tensor}``."""
        return {}

    def __repr__(self):
        return f'{type(self).__name__}(sites={self.sites})'
