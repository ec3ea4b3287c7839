"""Validation of a whole option file before any heavy work starts.

Every problem is collected and reported at once, each naming its full key path
(``train.optim_g.lr``), the value, and what would be valid (the closest key, the close registry
names, the folder that is missing). The schema is BasicSR's (``spec/basicsr-compat.md`` B.2)
plus the keys Real-ESRGAN, DASR/CDDNet and the papers' option files use, so files those
projects accept are accepted here. The keys, kinds, defaults, allowed values and minimums come
from realsr/option_defs.py (add options there, not here). Keyword arguments of archs, losses,
regularizers, optimizers and schedulers are checked against the signature of the class they go
to; metrics against their functions' arguments. What is checked and why: docs/options.md.
Validation writes nothing and loads no OpenCV.
"""
import difflib
import functools
import inspect
import math
import numbers
import os

from realsr import option_defs as defs
from realsr.utils.option_error import OptionError  # noqa: F401 (re-exported: realsr.option_schema.OptionError)
from realsr.runtime.wandb_logger import wandb_problems
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


@functools.lru_cache(maxsize=None)
def _signature_params(target):
    """``(named parameters, takes **kwargs)`` of a callable, cached: validation runs per file and per test."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    params = {n: p for n, p in sig.parameters.items() if n != 'self'}
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind == p.VAR_KEYWORD for p in params.values())


@functools.lru_cache(maxsize=None)
def _builtin_metric_params():
    """``{metric name: (argument names, required names)}`` of the built-in metrics, read from their
    source with ``ast``: importing them would load OpenCV and scipy, which validation must not."""
    import ast
    import importlib.util
    out = {}
    for module in METRIC_REGISTRY._builtin_modules:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        with open(spec.origin, encoding='utf-8') as f:
            tree = ast.parse(f.read(), spec.origin)
        for node in tree.body:
            registered = isinstance(node, ast.FunctionDef) and any('METRIC_REGISTRY' in ast.unparse(d)
                                                                   for d in node.decorator_list)
            if registered:
                args = node.args.args + node.args.kwonlyargs
                n_required = len(node.args.args) - len(node.args.defaults)
                required = [a.arg for a in node.args.args[:n_required]]
                required += [a.arg for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is None]
                out[node.name] = ([a.arg for a in args], required)
    return out


def _metric_params(name):
    """(argument names, required names) of a metric, or None when no metric has that name."""
    registered = METRIC_REGISTRY._obj_map.get(name)  # a user's metric, or a built-in already imported
    if registered is not None:
        named, _ = _signature_params(registered)
        return list(named), [n for n, p in named.items() if p.default is p.empty]
    return _builtin_metric_params().get(name)


def _close(key, candidates):
    close = difflib.get_close_matches(str(key), list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


class _Checker:
    def __init__(self, opt, is_train, check_paths):
        self.opt = opt
        self.is_train = is_train
        self.check_paths = check_paths
        self.problems = []

    def add(self, msg):
        self.problems.append(msg)

    # generic section: known keys with kinds, optional regex patterns, close-key suggestions
    def section(self, d, path, known, patterns=None, allow_extra=False, suggest=()):
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
                    self.unknown_key(full, key, list(known) + list(suggest))
                continue
            if not _kind_ok(kind, value):
                self.add(f"'{full}' must be {_kind_text(kind)}, got {value!r}")

    def options(self, d, path, options, patterns=None, suggest=(), allow_extra=False):
        """A section defined in realsr/option_defs.py: known keys and kinds, then allowed values
        and minimums."""
        self.section(d, path, defs.kinds(options), patterns, allow_extra=allow_extra, suggest=suggest)
        if not isinstance(d, dict):
            return
        for o in options:
            value = d.get(o.name)
            if value is None or not _kind_ok(o.kind, value) or (isinstance(value, bool) and o.kind != 'bool'):
                continue
            full = f'{path}.{o.name}' if path else o.name
            if o.choices and value not in o.choices:
                self.add(f"'{full}' must be one of {', '.join(map(str, o.choices))}, got {value!r}")
            if o.minimum is not None and _is_num(value) and value < o.minimum:
                self.add(f"'{full}' must be at least {o.minimum:g}, got {value!r}")

    def without_training_keys(self, ds, path, phase, options):
        """``ds`` without the keys that only a training dataset reads, each reported (a val or test
        dataset reads every image once, whole and unaugmented)."""
        if phase == 'train':
            return ds
        allowed = {o.name for o in options}
        training = {o.name for o in defs.all_dataset_options() if o.train_only} - allowed
        found = [k for k in ds if k in training]
        for key in found:
            self.add(f"'{path}.{key}' applies to training datasets only ({phase} datasets load each image once, "
                     'whole, without augmentation or batching); remove it')
        return {k: v for k, v in ds.items() if k not in found}

    def unknown_key(self, full, key, known):
        close = _close(key, known)
        hint = f"; did you mean '{close}'?" if close else ''
        self.add(f"unknown key '{full}'{hint}")

    def type_of(self, d, path, example):
        """``d['type']``; or None after reporting it missing, naming a misspelled 'type' key if one is there."""
        if 'type' in d:
            return d['type']
        typo = _close('type', [k for k in d if isinstance(k, str)])
        if typo is not None:
            self.add(f"unknown key '{path}.{typo}'; did you mean 'type'?")
        else:
            self.add(f"'{path}' has no 'type' (e.g. {example})")
        return None

    def registry_type(self, registry, name, path):
        try:
            return registry.get(name)
        except KeyError as err:
            self.add(f"'{path}': {err.args[0]}")
            return None

    def kwargs_for(self, target, kwargs, path, extra_ok=()):
        """Check keyword arguments against a callable's signature: names, required ones, and values
        where the default says what kind they are (a number, true/false)."""
        found = _signature_params(target)
        if found is None:
            return
        named, var_kw = found
        name = getattr(target, '__name__', target)
        for key, value in kwargs.items():
            p = named.get(key)
            if p is None:
                if key not in extra_ok and not var_kw:
                    close = _close(key, named)
                    hint = f"; did you mean '{close}'?" if close else f"; {name} takes: {', '.join(named)}"
                    self.add(f"unknown key '{path}.{key}'{hint}")
                continue
            self.like_default(f'{path}.{key}', value, p.default)
        for n, p in named.items():
            if p.default is p.empty and n not in kwargs and n not in extra_ok:
                self.add(f"'{path}' is missing the required key '{n}' of {name}")

    def own_problems(self, cls, path, kwargs):
        """Value checks a registered class knows best: its ``option_problems(path, **kwargs)``."""
        check = getattr(cls, 'option_problems', None)
        if check is not None:
            self.problems += check(path, **{k: v for k, v in kwargs.items() if k != 'type'})

    def like_default(self, full, value, default):
        if value is None or default is inspect.Parameter.empty or default is None:
            return
        if isinstance(default, bool):
            if not isinstance(value, bool):
                self.add(f"'{full}' must be true or false, got {value!r}")
        elif isinstance(default, numbers.Real) and (isinstance(value, (str, bool))):
            self.add(f"'{full}' must be a number, got {value!r}")

    def existing(self, path, value, want='dir'):
        if not self.check_paths or value is None:
            return
        p = os.path.expanduser(str(value))
        ok = os.path.isdir(p) if want == 'dir' else os.path.isfile(p)
        if not ok:
            what = 'folder' if want == 'dir' else 'file'
            self.add(f"'{path}': {what} {value!r} does not exist" + (f' (resolved against {os.getcwd()})'
                                                                     if not os.path.isabs(p) else ''))

    # -- the model's slots ---------------------------------------------------------------
    def model_slots(self, table):
        """The slots (``defs.LOSS_SLOTS`` / ``defs.NETWORK_SLOTS``) of the file's model, or None
        for a model we do not know (a user's model not derived from a built-in one)."""
        model_type = self.opt.get('model_type')
        if not isinstance(model_type, str):
            return None
        if model_type in table:
            return table[model_type]
        if model_type not in MODEL_REGISTRY._obj_map:
            return None
        for cls in MODEL_REGISTRY._obj_map[model_type].__mro__:
            if cls.__name__ in table:
                return table[cls.__name__]
        return None

    # -- sections ------------------------------------------------------------------------
    def run(self):
        opt = self.opt
        networks = None
        if 'model_type' in opt:
            self.registry_type(MODEL_REGISTRY, opt['model_type'], 'model_type')
            networks = self.model_slots(defs.NETWORK_SLOTS)
        self.options(opt, '', defs.TOP_LEVEL, {_NETWORK_KEY: 'dict'},
                     suggest=[f'network_{n}' for n in (networks or ('g', 'd', 'p'))])
        for key in ('name', 'model_type'):
            if key not in opt:
                self.add(f"missing top-level key '{key}'")
        num_gpu = opt.get('num_gpu')
        if isinstance(num_gpu, str) and num_gpu != 'auto':
            self.add(f"'num_gpu' must be 'auto' or an integer, got {num_gpu!r}")
        if isinstance(opt.get('dist_params'), dict):
            self.options(opt['dist_params'], 'dist_params', defs.DIST_PARAMS)
        for key, value in opt.items():
            if _NETWORK_KEY.match(str(key)):
                label = str(key)[len('network_'):]
                if networks is not None and label not in networks:
                    names = ', '.join(f'network_{n}' for n in networks)
                    self.add(f"unknown key '{key}': {opt.get('model_type')} builds {names}")
                elif isinstance(value, dict):
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
            self.options(opt['logger'], 'logger', defs.LOGGER)
            if isinstance(opt['logger'].get('wandb'), dict):
                self.options(opt['logger']['wandb'], 'logger.wandb', defs.WANDB)
                if self.is_train:  # only training logs to wandb
                    self.problems += wandb_problems(opt)
        if isinstance(opt.get('tile'), dict):
            self.options(opt['tile'], 'tile', defs.TILE)
        if isinstance(opt.get('regularizers'), list):
            self.regularizers(opt['regularizers'])
        self.patch_sizes()
        self.expert_count()
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
            if not isinstance(reg, dict):
                self.add(f"'{path}' needs a 'type' (e.g. ChannelDropout)")
                continue
            name = self.type_of(reg, path, 'ChannelDropout')
            cls = self.registry_type(REGULARIZER_REGISTRY, name, f'{path}.type') if name is not None else None
            if cls is not None:
                self.kwargs_for(cls, {k: v for k, v in reg.items() if k != 'type'}, path)

    def network(self, net_opt, path):
        name = self.type_of(net_opt, path, 'RRDBNet: the registered arch name')
        if name is None:
            return
        cls = self.registry_type(ARCH_REGISTRY, name, f'{path}.type')
        if cls is not None:
            self.kwargs_for(cls, {k: v for k, v in net_opt.items() if k != 'type'}, path)

    def datasets(self, datasets):
        phases = []
        for key, ds in datasets.items():
            path = f'datasets.{key}'
            phase = str(key).split('_')[0]
            phases.append(phase)
            if phase not in defs.PHASES:
                close = _close(phase, defs.PHASES)
                hint = f"; did you mean '{close}'?" if close else ''
                self.add(f"unknown key '{path}': dataset keys must start with train, val or test (e.g. val_1, "
                          f"test_2), got '{key}'{hint}")
                continue
            if not isinstance(ds, dict):
                self.add(f"'{path}' must be a mapping")
                continue
            name = self.type_of(ds, path, 'PairedImageDataset')
            if name is None:
                continue
            options = defs.dataset_options(name, phase)
            if options is None:  # not built in: a user's registered dataset
                cls = self.registry_type(DATASET_REGISTRY, name, f'{path}.type')
                keys = getattr(cls, 'option_keys', None)
                options = defs.LOADER + tuple(defs.Option(k, kind) for k, kind in keys.items()) if keys else None
            if options is None:  # a user's dataset that does not declare its keys: the loader keys are ours
                self.options(ds, path, defs.LOADER, allow_extra=True)
            else:
                self.options(self.without_training_keys(ds, path, phase, options), path, options)
            builtin = name in defs.DATASET_TYPES
            io = ds.get('io_backend')
            if io is None and builtin:
                self.add(f"'{path}.io_backend' is missing (e.g. io_backend: {{type: disk}})")
            if isinstance(io, dict):
                self.options(io, f'{path}.io_backend', defs.IO_BACKEND)
                if io.get('type') is None:
                    self.add(f"'{path}.io_backend.type' must be one of {', '.join(IO_BACKEND_TYPES)}, got None")
            if ds.get('prefetch_mode') == 'cuda' and ds.get('pin_memory') is False:
                self.add(f"'{path}.prefetch_mode' cuda needs pinned memory: remove '{path}.pin_memory: false'")
            for key_name in ('dataroot_gt', 'dataroot_lq'):
                if key_name in ds and ds[key_name] is not None:
                    self.existing(f'{path}.{key_name}', ds[key_name], 'dir')
            for key_name in ('meta_info_file', 'meta_info'):
                if ds.get(key_name) is not None:
                    self.existing(f'{path}.{key_name}', ds[key_name], 'file')
            if phase == 'train' and builtin and 'batch_size_per_gpu' not in ds:
                self.add(f"'{path}.batch_size_per_gpu' is required for the train dataset")
        if self.is_train and 'train' not in phases:
            self.add("'datasets' has no 'train' entry")

    def paths(self, path_opt):
        networks = self.model_slots(defs.NETWORK_SLOTS)
        self.options(path_opt, 'path', defs.PATH, _PATH_PATTERNS,
                     suggest=[f'{p}{n}' for p in ('pretrain_network_', 'param_key_', 'strict_load_')
                              for n in (networks or ('g',))])
        for key, value in path_opt.items():
            prefix = next((p for p in ('pretrain_network_', 'param_key_', 'strict_load_') if str(key).startswith(p)),
                          None)
            if prefix is None:
                continue
            label = str(key)[len(prefix):]
            if networks is not None and label not in networks and not (label == 'g_ema' and prefix != 'strict_load_'):
                close = _close(key, [prefix + n for n in networks])
                hint = f"; did you mean '{close}'?" if close else ''
                self.add(f"unknown key 'path.{key}': {self.opt.get('model_type')} has no network_{label}{hint}")
            elif prefix == 'pretrain_network_' and value is not None:
                self.existing(f'path.{key}', value, 'file')
        if path_opt.get('resume_state') is not None and not self.opt.get('auto_resume'):
            self.existing('path.resume_state', path_opt['resume_state'], 'file')

    def train(self, train_opt):
        slots = self.model_slots(defs.LOSS_SLOTS)
        self.options(train_opt, 'train', defs.TRAIN, {_LOSS_KEY: 'dict'}, suggest=slots or ())
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
            if not _LOSS_KEY.match(str(key)) or key in ('optim_g', 'optim_d'):
                continue
            if slots is not None and key not in slots:
                close = _close(key, slots)
                hint = f"did you mean '{close}'? " if close else ''
                self.add(f"unknown key 'train.{key}': {hint}{self.opt.get('model_type')} reads the losses "
                          f"{', '.join(slots)}")
                continue
            if not isinstance(value, dict):
                continue
            name = self.type_of(value, f'train.{key}', 'L1Loss')
            cls = self.registry_type(LOSS_REGISTRY, name, f'train.{key}.type') if name is not None else None
            if cls is not None:
                self.kwargs_for(cls, {k: v for k, v in value.items() if k != 'type'}, f'train.{key}')
                self.own_problems(cls, f'train.{key}', value)

    def optimizer(self, optim_opt, path):
        import torch  # only here: validating an optimizer needs to know torch's classes
        name = optim_opt.get('type') if 'type' in optim_opt else self.type_of(optim_opt, path, 'Adam')
        if name is None:
            return
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
        name = sched.get('type') if 'type' in sched else self.type_of(sched, 'train.scheduler', 'MultiStepLR')
        if name is None:
            return
        if name not in SCHEDULERS:
            close = difflib.get_close_matches(str(name), SCHEDULERS, n=2, cutoff=0.4)
            self.add(f"'train.scheduler.type': unknown scheduler {name!r}; " +
                     (f"close names: {', '.join(close)}" if close else f"choose one of {', '.join(SCHEDULERS)}"))
            return
        cls = lr_scheduler.get_scheduler_class(name)
        self.kwargs_for(cls, {k: v for k, v in sched.items() if k != 'type'}, 'train.scheduler',
                        extra_ok=('optimizer', 'last_epoch'))

    def val(self, val_opt):
        self.options(val_opt, 'val', defs.VAL)
        if self.is_train and 'val_freq' not in val_opt:
            self.add("missing 'val.val_freq': a training file with a 'val' section validates every val_freq "
                     "iterations (e.g. val_freq: 5000)")
        if isinstance(val_opt.get('tile'), dict):
            self.options(val_opt['tile'], 'val.tile', defs.TILE)
        metrics = val_opt.get('metrics')
        if isinstance(metrics, dict):
            for name, mopt in metrics.items():
                self.metric(f'val.metrics.{name}', mopt)

    def metric(self, path, mopt):
        if not isinstance(mopt, dict):
            self.add(f"'{path}' needs a 'type' (e.g. calculate_psnr)")
            return
        name = self.type_of(mopt, path, 'calculate_psnr')
        if name is None:
            return
        found = _metric_params(name)
        if found is None:
            self.registry_type(METRIC_REGISTRY, name, f'{path}.type')  # the error lists close names
            found = _metric_params(name)
            if found is None:
                return
        params, required = found
        params = [p for p in params if p not in ('img', 'img2')]
        self.options(mopt, path, defs.METRIC + tuple(defs.Option(p, 'any') for p in params if p != 'type'))
        for p in required:
            if p not in ('img', 'img2') and p not in mopt:
                self.add(f"'{path}' is missing the required key '{p}' of {name} (e.g. {p}: 4 at x4)")

    def expert_count(self):
        """DASR's top-level ``num_networks`` is the expert count its networks are built with here
        from their own arguments: all must agree."""
        count = self.opt.get('num_networks')
        if not _is_int(count):
            return
        for path, key in (('network_g', 'num_models'), ('network_p', 'num_networks')):
            net = self.opt.get(path)
            if isinstance(net, dict) and _is_int(net.get(key)) and net[key] != count:
                self.add(f"'num_networks' ({count}) and '{path}.{key}' ({net[key]}) differ: DASR's expert count "
                         'is one number')

    def patch_sizes(self):
        """``gt_size`` a multiple of ``scale``; with on-the-fly degradation, no larger than the crops
        the pipeline degrades, and those large enough for its blur kernels."""
        opt = self.opt
        scale = opt.get('scale')
        datasets = opt.get('datasets') if isinstance(opt.get('datasets'), dict) else {}
        train = datasets.get('train') if isinstance(datasets.get('train'), dict) else None
        if not _is_int(scale) or scale < 1:
            return
        sizes = [('gt_size', opt.get('gt_size'))]
        if train is not None:
            sizes.append(('datasets.train.gt_size', train.get('gt_size')))
        for path, size in sizes:
            if _is_int(size) and size > 0 and size % scale:
                self.add(f"'{path}' ({size}) must be a multiple of scale ({scale}): the LQ patch is gt_size / scale "
                         f'pixels (e.g. {max(scale, size - size % scale)})')
        if not self.is_train or train is None or train.get('type') != 'RealESRGANDataset' or \
                opt.get('high_order_degradation') is False:
            return
        gt_size = opt.get('gt_size', train.get('gt_size'))
        crop = defs.value(train, defs.REALESRGAN_DATASET, 'crop_pad_size')
        if not (_is_int(gt_size) and _is_int(crop)):
            return
        if gt_size > crop:
            self.add(f"'gt_size' ({gt_size}) is larger than 'datasets.train.crop_pad_size' ({crop}): the patches are "
                     'cut from the degraded crops; raise crop_pad_size or lower gt_size')
        # The bound of SecondOrderDegradation._check_size: an image that shrinks by resize_range[0]
        # (and to crop / scale) must stay larger than half the largest blur kernel.
        ranges = [train.get(k) for k in ('kernel_range', 'kernel_range2', 'final_kernel_range')]
        largest = max([r[1] for r in ranges if isinstance(r, (list, tuple)) and len(r) == 2 and _is_int(r[1])]
                      or [defs.default(defs.DEGRADATION_DATASET, 'kernel_range')[1]])
        pad = int(largest) // 2
        get = lambda k: defs.value(opt, defs.DEGRADATION_TOP, k)  # noqa: E731
        try:
            shrink = float(get('resize_range')[0]) if float(get('resize_prob')[1]) > 0 else 1.0
            second_blur = float(get('second_blur_prob')) > 0
        except (TypeError, ValueError, IndexError):
            return  # reported as a kind problem, or by the pipeline itself
        if shrink <= 0:
            return
        need = max(math.ceil((pad + 1) / shrink) if second_blur else 0, (pad + 1) * scale)
        if crop < need:
            self.add(f"'datasets.train.crop_pad_size' ({crop}) is too small for the degradation kernels: an image "
                     f'can shrink by resize_range[0] ({shrink}) and to 1/{scale}, and {largest}x{largest} kernels '
                     f'need more than {pad} px; use at least {need}')


def validate_options(opt, is_train=True, check_paths=True, source=None):
    """Raise :class:`OptionError` listing every problem in ``opt``; return ``opt`` if none."""
    problems = _Checker(opt, is_train, check_paths).run()
    if problems:
        raise OptionError(problems, source)
    return opt
