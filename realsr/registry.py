"""Name -> class/function registries with BasicSR's semantics.

``@ARCH_REGISTRY.register()`` registers a class under its ``__name__``;
``ARCH_REGISTRY.get('RRDBNet')`` looks it up, falling back to ``'RRDBNet_basicsr'`` like
BasicSR does. Unlike BasicSR, no folder is scanned: each registry names the built-in modules
that fill it and imports them on first use, one by one, so a broken optional module only
removes its own names (the lookup error then says which module failed and why).
"""
import difflib
import importlib
import logging

logger = logging.getLogger('realsr')


class Registry:
    """A mapping from names to objects, filled by a decorator."""

    def __init__(self, name, builtin_modules=()):
        self._name = name
        self._obj_map = {}
        self._builtin_modules = list(builtin_modules)
        self._loaded = False
        self.import_errors = {}  # module name -> error text, for lookups that fail

    # -- registration ---------------------------------------------------------------------
    def _do_register(self, name, obj, suffix=None):
        if isinstance(suffix, str):
            name = name + '_' + suffix
        if name in self._obj_map and self._obj_map[name] is not obj:
            raise AssertionError(f"An object named '{name}' was already registered in '{self._name}' registry!")
        self._obj_map[name] = obj

    def register(self, obj=None, suffix=None):
        """Use as ``@REG.register()`` on a class/function, or call ``REG.register(obj)``."""
        if obj is None:
            def deco(func_or_class):
                self._do_register(func_or_class.__name__, func_or_class, suffix)
                return func_or_class
            return deco
        self._do_register(obj.__name__, obj, suffix)
        return obj

    # -- lazy import of the built-in modules ----------------------------------------------
    def _load_builtins(self):
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            try:
                importlib.import_module(module)
            except Exception as err:  # one broken optional module must not break the others
                self.import_errors[module] = f'{type(err).__name__}: {err}'
                logger.warning('realsr: could not import %s (%s); its %s entries are unavailable.', module,
                               self.import_errors[module], self._name)

    # -- lookup ---------------------------------------------------------------------------
    def get(self, name, suffix='basicsr'):
        if name not in self._obj_map:
            self._load_builtins()
        ret = self._obj_map.get(name)
        if ret is None and suffix:
            ret = self._obj_map.get(name + '_' + suffix)
            if ret is not None:
                logger.info('Name %s is not found, use name: %s_%s!', name, name, suffix)
        if ret is None:
            raise KeyError(self.unknown_name_message(name))
        return ret

    def unknown_name_message(self, name):
        close = difflib.get_close_matches(str(name), self.keys(), n=5, cutoff=0.5)
        msg = f"No object named '{name}' found in '{self._name}' registry!"
        msg += f" Close names: {', '.join(close)}." if close else f" Known names: {', '.join(sorted(self.keys()))}."
        if self.import_errors:
            msg += ' Modules that failed to import: ' + '; '.join(f'{m} ({e})' for m, e in self.import_errors.items())
        return msg

    def __contains__(self, name):
        self._load_builtins()
        return name in self._obj_map

    def __iter__(self):
        self._load_builtins()
        return iter(self._obj_map.items())

    def keys(self):
        self._load_builtins()
        return self._obj_map.keys()

    def __repr__(self):
        return f'Registry({self._name!r}, {len(self._obj_map)} entries)'


DATASET_REGISTRY = Registry('dataset', [
    'realsr.data.paired_image_dataset',
    'realsr.data.single_image_dataset',
    'realsr.data.realesrgan_dataset',
])
ARCH_REGISTRY = Registry('arch', [
    'realsr.archs.srresnet_arch',
    'realsr.archs.rrdbnet_arch',
    'realsr.archs.swinir_arch',
    'realsr.archs.drct_arch',
    'realsr.archs.discriminator_arch',
    'realsr.archs.vgg_arch',
    'realsr.archs.dropout_aliases_arch',
    'realsr.archs.dasr_arch',
    'realsr.archs.srvgg_arch',
    'realsr.archs.hat_arch',
])
MODEL_REGISTRY = Registry('model', [
    'realsr.models.sr_model',
    'realsr.models.realesrgan_model',
    'realsr.models.drct_model',
    'realsr.models.hat_model',
    'realsr.models.dasr_model',
])
LOSS_REGISTRY = Registry('loss', [
    'realsr.losses.basic_loss',
    'realsr.losses.gan_loss',
    'realsr.losses.perceptual_loss',
])
METRIC_REGISTRY = Registry('metric', [
    'realsr.metrics.psnr_ssim',
    'realsr.metrics.niqe',
])
REGULARIZER_REGISTRY = Registry('regularizer', [
    'realsr.regularizers.dropout',
    'realsr.regularizers.feature_alignment',
    'realsr.regularizers.cross_dropout',
])
