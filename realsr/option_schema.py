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

from realsr.runtime.step_options import step_option_kinds, step_option_problems
from realsr.registry import (ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY,
                             REGULARIZER_REGISTRY)


class OptionError(ValueError):
    """Raised with every problem found in an option file."""

    def __init__(self, problems, source=None):
        self.problems = list(problems)
        where = f' in {source}' if source else ''
        lines = '\n'.join(f'  - {p}' for p in self.problems)
        super().__init__(f'{len(self.problems)} problem(s){where}:\n{lines}')


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


# -- the schema ----------------------------------------------------------------------------
# Real-ESRGAN second-order degradation keys. They live at the top level (pipeline) and in the
# train dataset (kernels); DASR/CDDNet repeat them with suffixes such as `_weak1`/`_standard1`.
DEGRADATION_TOP_KEYS = {
    'resize_prob': 'list', 'resize_range': 'list', 'gaussian_noise_prob': 'num', 'noise_range': 'list',
    'poisson_scale_range': 'list', 'gray_noise_prob': 'num', 'jpeg_range': 'list', 'second_blur_prob': 'num',
    'resize_prob2': 'list', 'resize_range2': 'list', 'gaussian_noise_prob2': 'num', 'noise_range2': 'list',
    'poisson_scale_range2': 'list', 'gray_noise_prob2': 'num', 'jpeg_range2': 'list', 'gt_size': 'int',
    'queue_size': 'int', 'high_order_degradation': 'bool', 'gt_usm': 'bool', 'l1_gt_usm': 'bool',
    'percep_gt_usm': 'bool', 'gan_gt_usm': 'bool', 'crop_pad_size': 'int', 'per_sample': 'bool',
    'degree_list': 'list', 'degree_prob': 'list', 'num_networks': 'int',
}
DEGRADATION_DATASET_KEYS = {
    'blur_kernel_size': 'int', 'kernel_list': 'list', 'kernel_prob': 'list', 'blur_sigma': 'list',
    'betag_range': 'list', 'betap_range': 'list', 'sinc_prob': 'num', 'blur_kernel_size2': 'int',
    'kernel_list2': 'list', 'kernel_prob2': 'list', 'blur_sigma2': 'list', 'betag_range2': 'list',
    'betap_range2': 'list', 'sinc_prob2': 'num', 'final_sinc_prob': 'num', 'blur_kernel_size_minimum': 'int',
    'blur_kernel_size2_minimum': 'int', 'kernel_range': 'list', 'crop_pad_size': 'int', 'meta_info': 'str',
}
# `resize_prob_weak1`, `blur_sigma_standard1`, ... (DASR degradation spaces)
_DEGRADATION_VARIANT = re.compile(r'^(?P<base>[a-z0-9_]+?)_(weak|standard|severe)\d*$')

TOP_LEVEL = {
    'name': 'str|num', 'model_type': 'str', 'scale': 'int', 'num_gpu': 'int|str', 'manual_seed': 'int',
    'find_unused_parameters': 'bool', 'dist_params': 'dict', 'is_train': 'bool', 'dist': 'bool', 'rank': 'int',
    'world_size': 'int', 'auto_resume': 'bool', 'root_path': 'str', 'datasets': 'dict', 'path': 'dict',
    'train': 'dict', 'val': 'dict', 'logger': 'dict', 'tile': 'dict',
    'weight': 'num',  # Simple-Align's regularizer strength
    'regularizers': 'list',
    'datasets_grid': 'dict|list',  # expanded into datasets by realsr.benchmark.grid before validation
    **DEGRADATION_TOP_KEYS,
    **step_option_kinds(''),  # use_amp, amp_bf16, use_channels_last, use_compile, compile_mode
}
_NETWORK_KEY = re.compile(r'^network_\w+$')

DIST_PARAMS = {'backend': 'str', 'port': 'int'}

LOADER_KEYS = {
    'name': 'str|num', 'type': 'str', 'phase': 'str', 'scale': 'int', 'io_backend': 'dict',
    'num_worker_per_gpu': 'int', 'batch_size_per_gpu': 'int', 'dataset_enlarge_ratio': 'int',
    'prefetch_mode': 'str', 'num_prefetch_queue': 'int', 'pin_memory': 'bool', 'persistent_workers': 'bool',
    'use_shuffle': 'bool',  # read by nobody (shuffling comes from the sampler), kept for old files
    'skip_bad_images': 'bool',
}
# Keys each built-in dataset reads (BasicSR names). Other dataset types are checked only for
# the loader keys' types, since we cannot know what a user's dataset reads.
DATASET_KEYS = {
    'PairedImageDataset': {'dataroot_gt': 'str', 'dataroot_lq': 'str', 'meta_info_file': 'str', 'filename_tmpl': 'str',
                           'gt_size': 'int', 'use_hflip': 'bool', 'use_flip': 'bool', 'use_rot': 'bool', 'color': 'str',
                           'mean': 'list', 'std': 'list'},
    'SingleImageDataset': {'dataroot_lq': 'str', 'meta_info_file': 'str', 'color': 'str', 'mean': 'list', 'std': 'list'},
    # meta_info_file: DRCT's Real-DRCT files use PairedImageDataset's spelling
    'RealESRGANDataset': {'dataroot_gt': 'str', 'meta_info': 'str', 'meta_info_file': 'str', 'gt_size': 'int',
                          'use_hflip': 'bool', 'use_rot': 'bool', 'crop_pad_size': 'int'},
}
DATASET_KEYS['RealESRGANPairedDataset'] = {**DATASET_KEYS['PairedImageDataset'], 'meta_info': 'str'}
IO_BACKEND = {'type': 'str', 'db_paths': 'list|str', 'client_keys': 'list|str', 'readonly': 'bool', 'lock': 'bool',
              'readahead': 'bool'}
IO_BACKEND_TYPES = ('disk', 'lmdb')
PREFETCH_MODES = (None, 'cpu', 'cuda')

PATH = {'resume_state': 'str', 'ignore_resume_networks': 'list', 'experiments_root': 'str', 'results_root': 'str',
        'root': 'str', 'models': 'str', 'training_states': 'str', 'log': 'str', 'visualization': 'str',
        'pretrain_network_g_path': 'str'}
_PATH_PATTERNS = {re.compile(r'^pretrain_network_\w+$'): 'str', re.compile(r'^param_key_\w+$'): 'str',
                  re.compile(r'^strict_load_\w+$'): 'bool'}

TRAIN = {'total_iter': 'int', 'warmup_iter': 'int', 'ema_decay': 'num', 'optim_g': 'dict', 'optim_d': 'dict',
         'scheduler': 'dict', 'net_d_iters': 'int', 'net_d_init_iters': 'int',
         **step_option_kinds('train')}  # grad_clip, grad_clip_max_norm, use_grad_clip, nonfinite_max_skips
_LOSS_KEY = re.compile(r'^\w+_opt$')

VAL = {'val_freq': 'int', 'save_img': 'bool', 'suffix': 'str', 'pbar': 'bool', 'metrics': 'dict', 'tile': 'dict',
       'compare_bicubic': 'bool', 'pad_mode': 'str'}
TILE = {'tile_size': 'int', 'tile_pad': 'int'}
METRIC_EXTRA = {'type': 'str', 'better': 'str'}

LOGGER = {'print_freq': 'int', 'save_checkpoint_freq': 'int', 'use_tb_logger': 'bool', 'wandb': 'dict'}
WANDB = {'project': 'str', 'resume_id': 'str', 'entity': 'str'}

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
        self.section(opt, '', TOP_LEVEL, {_NETWORK_KEY: 'dict', **{
            re.compile(rf'^{re.escape(k)}_(weak|standard|severe)\d*$'): kind for k, kind in DEGRADATION_TOP_KEYS.items()}})
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
            expand_dataset_grid(expanded)
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
                self.section(ds, path, {**LOADER_KEYS, **known, **(train_keys if phase == 'train' else {})},
                             {_DEGRADATION_VARIANT: 'any'} if phase == 'train' else None)
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
