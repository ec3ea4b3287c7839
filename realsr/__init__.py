"""realsr: a BasicSR-compatible framework for blind (real-world) image super-resolution.

Importing the package is deliberately cheap: it loads no torch, no arch and no dataset.
The registries fill themselves on first lookup (see :mod:`realsr.registry`).
"""
from .version import __version__

__all__ = ['__version__']
