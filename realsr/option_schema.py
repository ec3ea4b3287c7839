"""Validation of a whole option file before any heavy work starts.

Every problem is collected and reported at once, each naming its full key path
(``train.optim_g.lr``), the value, and what would be valid (the closest key, the close registry
names, the folder that is missing). The schema is BasicSR's (``spec/basicsr-compat.md`` B.2)
plus the keys Real-ESRGAN, DASR/CDDNet and the papers' option files use, so files those
projects accept are accepted here. Keyword arguments of archs, losses, optimizers and
schedulers are checked against the signature of the class they go to.
"""
import difflib
import inspect
import numbers
import os
import re

from realsr import option_defs as defs
from realsr.utils.option_error import OptionError  # noqa: F401 (re-exported: realsr.option_schema.OptionError)
from realsr.runtime.step_options import step_option_kinds, step_option_problems
from realsr.registry import (ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY,
                             REGULARIZER_REGISTRY)


# -- value kinds ---------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) or (
        isinstance(v, float) and v.is_integer())


def _is_num(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


KINDS = {
    'int': (_is_int, 'an integer'),
    'num': (_is_num, 'a number'),
    'bool': (lambda v: isinstance(v, bool), 'true or false'),
    'str': (lambda v: isinstance(v, str), 'a string'),
    'list': (lambda v: isinstance(v, (list, tuple)), 'a list'),
    'dict': (lambda v: isinstance(v, dict), 'a mapping'),
    'any': (lambda v: True, 'anything'),
}


def _kind_ok(kind, value):
    if value is None:
        return True  # `~` means "not set" everywhere in BasicSR files
    return any(KINDS[k][0](value) for k in kind.split('|'))


def _kind_text(kind):
    return ' or '.join(KINDS[k][1] for k in kind.split('|'))


# -- the schema: derived from the definitions (realsr/option_defs.py: add new options there) --------
DEGRADATION_TOP_KEYS = defs.kinds(defs.DEGRADATION_TOP)
DEGRADATION_DATASET_KEYS = defs.kinds(defs.DEGRADATION_DATASET)
TOP_LEVEL = defs.kinds(defs.TOP_LEVEL)
_NETWORK_KEY = defs.NETWORK_KEY
DIST_PARAMS = defs.kinds(defs.DIST_PARAMS)
LOADER_KEYS = defs.kinds(defs.LOADER)
DATASET_KEYS = {name: defs.kinds(options) for name, options in defs.DATASET_TYPES.items()}
IO_BACKEND = defs.kinds(defs.IO_BACKEND)
IO_BACKEND_TYPES = ('disk', 'lmdb')
PREFETCH_MODES = (None, 'cpu', 'cuda')
PATH = defs.kinds(defs.PATH)
_PATH_PATTERNS = {pattern: kind for pattern, kind, _ in defs.PATH_PATTERNS}
TRAIN = defs.kinds(defs.TRAIN)
_LOSS_KEY = defs.LOSS_KEY
VAL = defs.kinds(defs.VAL)
TILE = defs.kinds(defs.TILE)
METRIC_EXTRA = defs.kinds(defs.METRIC)
LOGGER = defs.kinds(defs.LOGGER)
WANDB = defs.kinds(defs.WANDB)

SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')


class _Checker:
    def __init__(self, opt, is_train, check_paths):
        self.opt = opt
        self.is_train = is_train
        self.check_paths = check_paths
        self.problems = []

    def add(self, msg):
        self.problems.append(msg)

    # generic section: known keys with kinds, optional regex patterns, close-key suggestions
    def section(self, d, path, known, patterns=None, allow_extra=False):
        if not isinstance(d, dict):
            self.add(f"'{path}' must be a mapping, got {d!r}")
            return
        patterns = patterns or {}
        for key, value in d.items():
            full = f'{path}.{key}' if path else str(key)
            kind = known.get(key)
            if kind is None:
                kind = next((k for p, k in patterns.items() if p.match(str(key))), None)
            if kind is None:
                if not allow_extra:
                    self.unknown_key(full, key, known)
                continue
            if not _kind_ok(kind, value):
                self.add(f"'{full}' must be {_kind_text(kind)}, got {value!r}")

    def unknown_key(self, full, key, known):
        close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ''
        self.add(f"unknown key '{full}'{hint}")

    def registry_type(self, registry, name, path):
        try:
            return registry.get(name)
        except KeyError as err:
            self.add(f"'{path}': {err.args[0]}")
            return None

    def kwargs_for(self, target, kwargs, path, extra_ok=()):
        """Check keyword arguments against a callable's signature."""
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return
        params = {n: p for n, p in sig.parameters.items() if n != 'self'}
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return
        names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key in kwargs:
            if key not in names and key not in extra_ok:
                close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else f"; {getattr(target, '__name__', target)} takes: {', '.join(names)}"
                self.add(f"unknown key '{path}.{key}'{hint}")
        missing = [n for n, p in params.items()
                   if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in kwargs
                   and n not in extra_ok]
        for name in missing:
            self.add(f"'{path}' is missing the required key '{name}' of {getattr(target, '__name__', target)}")

    def existing(self, path, value, want='dir'):
        if not self.check_paths or value is None:
            return
        p = os.path.expanduser(str(value))
        ok = os.path.isdir(p) if want == 'dir' else os.path.isfile(p)
        if not ok:
            what = 'folder' if want == 'dir' else 'file'
            self.add(f"'{path}': {what} {value!r} does not exist" + (f' (resolved against {os.getcwd()})'
                                                                     if not os.path.isabs(p) else ''))

    # -- sections ------------------------------------------------------------------------
    def run(self):
        opt = self.opt
        self.section(opt, '', TOP_LEVEL, {_NETWORK_KEY: 'dict'})
        for key in ('name', 'model_type'):
            if key not in opt:
                self.add(f"missing top-level key '{key}'")
        num_gpu = opt.get('num_gpu')
        if isinstance(num_gpu, str) and num_gpu != 'auto':
            self.add(f"'num_gpu' must be 'auto' or an integer, got {num_gpu!r}")
        if 'model_type' in opt:
            self.registry_type(MODEL_REGISTRY, opt['model_type'], 'model_type')
        if isinstance(opt.get('dist_params'), dict):
            self.section(opt['dist_params'], 'dist_params', DIST_PARAMS)
            timeout = opt['dist_params'].get('timeout')
            if _is_num(timeout) and timeout <= 0:
                self.add(f"'dist_params.timeout' must be a positive number of seconds, got {timeout!r}")
        for key, value in opt.items():
            if _NETWORK_KEY.match(str(key)) and isinstance(value, dict):
                self.network(value, key)
        if self.is_train and 'network_g' not in opt:
            self.add("missing 'network_g': the generator's arch (network_g.type) is required")
        if opt.get('datasets_grid') is not None:  # not expanded yet (validate_options called directly)
            self.datasets_grid(opt)
        elif isinstance(opt.get('datasets'), dict):
            self.datasets(opt['datasets'])
        elif 'datasets' not in opt:
            self.add("missing 'datasets': at least one dataset (train/val/test_*) is required")
        if isinstance(opt.get('path'), dict):
            self.paths(opt['path'])
        if isinstance(opt.get('train'), dict):
            self.train(opt['train'])
        elif self.is_train and 'train' not in opt:
            self.add("missing 'train' section (optim_g, scheduler, total_iter, losses)")
        if isinstance(opt.get('val'), dict):
            self.val(opt['val'])
        if isinstance(opt.get('logger'), dict):
            self.section(opt['logger'], 'logger', LOGGER)
            if isinstance(opt['logger'].get('wandb'), dict):
                self.section(opt['logger']['wandb'], 'logger.wandb', WANDB)
        if isinstance(opt.get('tile'), dict):
            self.section(opt['tile'], 'tile', TILE)
        if isinstance(opt.get('regularizers'), list):
            self.regularizers(opt['regularizers'])
        self.problems += step_option_problems(opt)
        return self.problems

    def datasets_grid(self, opt):
        import copy

        from realsr.benchmark.grid import expand_dataset_grid
        expanded = {k: copy.deepcopy(opt[k]) for k in ('datasets', 'datasets_grid', 'scale') if k in opt}
        try:
            expand_dataset_grid(expanded, dataset_keys=defs.known_dataset_keys)
        except OptionError as err:
            self.problems += err.problems
            return
        self.datasets(expanded['datasets'])

    def regularizers(self, regs):
        for i, reg in enumerate(regs):
            path = f'regularizers[{i}]'
            if not isinstance(reg, dict) or 'type' not in reg:
                self.add(f"'{path}' needs a 'type' (e.g. ChannelDropout)")
                continue
            cls = self.registry_type(REGULARIZER_REGISTRY, reg['type'], f'{path}.type')
            if cls is not None:
                self.kwargs_for(cls, {k: v for k, v in reg.items() if k != 'type'}, path)

    def network(self, net_opt, path):
        if 'type' not in net_opt:
            self.add(f"'{path}' has no 'type' (the registered arch name)")
            return
        cls = self.registry_type(ARCH_REGISTRY, net_opt['type'], f'{path}.type')
        if cls is not None:
            self.kwargs_for(cls, {k: v for k, v in net_opt.items() if k != 'type'}, path)

    def datasets(self, datasets):
        phases = []
        for key, ds in datasets.items():
            path = f'datasets.{key}'
            phase = str(key).split('_')[0]
            phases.append(phase)
            if phase not in ('train', 'val', 'test'):
                self.add(f"'{path}': dataset keys must start with train, val or test (e.g. val_1, test_2), got '{key}'")
                continue
            if not isinstance(ds, dict):
                self.add(f"'{path}' must be a mapping")
                continue
            if 'type' not in ds:
                self.add(f"'{path}' has no 'type' (e.g. PairedImageDataset)")
                continue
            cls = self.registry_type(DATASET_REGISTRY, ds['type'], f'{path}.type')
            known = DATASET_KEYS.get(ds['type'], getattr(cls, 'option_keys', None))
            if known is None:  # a user's dataset: only the loader keys are ours to check
                self.section(ds, path, LOADER_KEYS, allow_extra=True)
            else:
                train_keys = {**DEGRADATION_DATASET_KEYS, **step_option_kinds('datasets.train')}
                self.section(ds, path, {**LOADER_KEYS, **known, **(train_keys if phase == 'train' else {})})
            io = ds.get('io_backend')
            if io is None and cls is not None and known is not None and ds['type'] in DATASET_KEYS:
                self.add(f"'{path}.io_backend' is missing (e.g. io_backend: {{type: disk}})")
            io_type = io.get('type') if isinstance(io, dict) else None
            if isinstance(io, dict):
                self.section(io, f'{path}.io_backend', IO_BACKEND)
                if io_type not in IO_BACKEND_TYPES:
                    self.add(f"'{path}.io_backend.type' must be one of {', '.join(IO_BACKEND_TYPES)}, got {io_type!r}")
            if ds.get('prefetch_mode') not in PREFETCH_MODES:
                self.add(f"'{path}.prefetch_mode' must be ~, cpu or cuda, got {ds.get('prefetch_mode')!r}")
            if ds.get('prefetch_mode') == 'cuda' and ds.get('pin_memory') is False:
                self.add(f"'{path}.prefetch_mode' cuda needs pinned memory: remove '{path}.pin_memory: false'")
            for key_name in ('dataroot_gt', 'dataroot_lq'):
                if key_name in ds and ds[key_name] is not None:
                    self.existing(f'{path}.{key_name}', ds[key_name], 'dir')
            for key_name in ('meta_info_file', 'meta_info'):
                if ds.get(key_name) is not None:
                    self.existing(f'{path}.{key_name}', ds[key_name], 'file')
            if phase == 'train':
                for key_name in ('batch_size_per_gpu',):
                    if key_name not in ds and ds['type'] in DATASET_KEYS:
                        self.add(f"'{path}.{key_name}' is required for the train dataset")
        if self.is_train and 'train' not in phases:
            self.add("'datasets' has no 'train' entry")

    def paths(self, path_opt):
        self.section(path_opt, 'path', PATH, _PATH_PATTERNS)
        for key, value in path_opt.items():
            if str(key).startswith('pretrain_network_') and value is not None:
                self.existing(f'path.{key}', value, 'file')
        if path_opt.get('resume_state') is not None and not self.opt.get('auto_resume'):
            self.existing('path.resume_state', path_opt['resume_state'], 'file')

    def train(self, train_opt):
        self.section(train_opt, 'train', TRAIN, {_LOSS_KEY: 'dict'})
        for key in ('optim_g', 'optim_d'):
            if isinstance(train_opt.get(key), dict):
                self.optimizer(train_opt[key], f'train.{key}')
        if self.is_train and 'optim_g' not in train_opt:
            self.add("missing 'train.optim_g' (e.g. {type: Adam, lr: !!float 2e-4})")
        if self.is_train and 'total_iter' not in train_opt:
            self.add("missing 'train.total_iter'")
        sched = train_opt.get('scheduler')
        if isinstance(sched, dict):
            self.scheduler(sched)
        for key, value in train_opt.items():
            if _LOSS_KEY.match(str(key)) and isinstance(value, dict):
                if 'type' not in value:
                    self.add(f"'train.{key}' has no 'type' (e.g. L1Loss)")
                    continue
                cls = self.registry_type(LOSS_REGISTRY, value['type'], f'train.{key}.type')
                if cls is not None:
                    self.kwargs_for(cls, {k: v for k, v in value.items() if k != 'type'}, f'train.{key}')

    def optimizer(self, optim_opt, path):
        import torch  # only here: validating an optimizer needs to know torch's classes
        name = optim_opt.get('type')
        cls = getattr(torch.optim, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            names = [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                     and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != 'Optimizer']
            close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.4)
            self.add(f"'{path}.type': unknown optimizer {name!r}; " +
                     (f"close names: {', '.join(close)}" if close else f"choose one of {', '.join(names)}"))
            return
        self.kwargs_for(cls, {k: v for k, v in optim_opt.items() if k != 'type'}, path, extra_ok=('params',))

    def scheduler(self, sched):
        from realsr.models import lr_scheduler
        name = sched.get('type')
        if name not in SCHEDULERS:
            close = difflib.get_close_matches(str(name), SCHEDULERS, n=2, cutoff=0.4)
            self.add(f"'train.scheduler.type': unknown scheduler {name!r}; " +
                     (f"close names: {', '.join(close)}" if close else f"choose one of {', '.join(SCHEDULERS)}"))
            return
        cls = lr_scheduler.get_scheduler_class(name)
        self.kwargs_for(cls, {k: v for k, v in sched.items() if k != 'type'}, 'train.scheduler',
                        extra_ok=('optimizer', 'last_epoch'))

    def val(self, val_opt):
        self.section(val_opt, 'val', VAL)
        if isinstance(val_opt.get('tile'), dict):
            self.section(val_opt['tile'], 'val.tile', TILE)
        metrics = val_opt.get('metrics')
        if isinstance(metrics, dict):
            for name, mopt in metrics.items():
                path = f'val.metrics.{name}'
                if not isinstance(mopt, dict) or 'type' not in mopt:
                    self.add(f"'{path}' needs a 'type' (e.g. calculate_psnr)")
                    continue
                fn = self.registry_type(METRIC_REGISTRY, mopt['type'], f'{path}.type')
                if mopt.get('better', 'higher') not in ('higher', 'lower'):
                    self.add(f"'{path}.better' must be higher or lower, got {mopt['better']!r}")
                if fn is not None:
                    params = [n for n, p in inspect.signature(fn).parameters.items()
                              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in ('img', 'img2')]
                    known = {**{p: 'any' for p in params}, **METRIC_EXTRA}
                    self.section(mopt, path, known)


def validate_options(opt, is_train=True, check_paths=True, source=None):
    """Raise :class:`OptionError` listing every problem in ``opt``; return ``opt`` if none."""
    problems = _Checker(opt, is_train, check_paths).run()
    if problems:
        raise OptionError(problems, source)
    return opt
