"""Command line and option files: BasicSR's ``parse_options`` steps, with validation first.

``python realsr/train.py -opt X.yml [--launcher none|pytorch|slurm] [--auto_resume] [--debug]
[--local_rank N | --local-rank N] [--force_yml key:sub=value ...]``

For --dry_run: ``format_resolved_options(opt)`` is the YAML of the resolved options (defaults
filled in from realsr/option_defs.py); ``validate_options`` is in realsr/option_schema.py.
"""
import argparse
import datetime
import os
import random
import shutil
import sys

import yaml

from realsr import compat
from realsr.benchmark.grid import expand_dataset_grid
from realsr.option_defs import fill_defaults, known_dataset_keys
from realsr.utils.atomic_write import write_atomic
from realsr.option_schema import OptionError, validate_options
from realsr.runtime.model_files import resolve_auto_networks
from realsr.utils.yaml_util import yaml_load, yaml_load_text


def build_arg_parser(is_train=True):
    parser = argparse.ArgumentParser(
        prog='realsr-train' if is_train else 'realsr-test',
        description=('Train' if is_train else 'Test') + ' a super-resolution model from a BasicSR-style option file.')
    parser.add_argument('-opt', '--opt', required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher: none (one process), pytorch (torchrun), slurm')
    parser.add_argument('--auto_resume', '--auto-resume', action='store_true',
                        help='resume from the latest training state of this experiment, if any')
    parser.add_argument('--debug', action='store_true', help='prefix the name with debug_ and log/validate often')
    # torch.distributed.launch passed --local_rank before torch 2.0 and --local-rank since.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--force_yml', '--force-yml', nargs='+', default=None, metavar='KEY=VALUE',
                        help='override option values, e.g. train:total_iter=1000 or train.optim_g.lr=1e-4')
    parser.add_argument('--dry_run', '--dry-run', action='store_true',
                        help='check the whole file (options, data, pretrained weights), print the resolved options '
                             'and exit 0, or 2 listing every problem; writes nothing and needs no GPU')
    return parser


def load_option_file(path):
    if not os.path.isfile(path):
        raise OptionError([f"option file {path!r} does not exist"])
    try:
        opt = yaml_load(path)
    except Exception as err:  # yaml.YAMLError names the line and column
        raise OptionError([f'cannot parse YAML: {err}'], path) from err
    if not isinstance(opt, dict):
        raise OptionError([f'the file must hold a mapping of options, got {type(opt).__name__}'], path)
    return opt


def apply_force_yml(opt, entries):
    """``key:sub=value`` (BasicSR) or ``key.sub=value``; the value is parsed as YAML."""
    for entry in entries or []:
        if '=' not in entry:
            raise OptionError([f'--force_yml entry {entry!r} must look like key:sub=value'])
        keys, value = (s.strip() for s in entry.split('=', 1))
        # Parse the text itself: yaml_load(value) would read a file if the value is an existing path.
        try:
            value = None if value.lower() == 'none' else yaml_load_text(value)
        except yaml.YAMLError:
            pass  # not YAML (e.g. '@x'): keep the text, as BasicSR does
        parts = keys.replace('.', ':').split(':')
        node = opt
        for i, key in enumerate(parts[:-1]):
            if not isinstance(node.get(key), dict):
                raise OptionError([f"--force_yml {entry!r}: '{':'.join(parts[:i + 1])}' is not a section of the file"])
            node = node[key]
        node[parts[-1]] = value
    return opt


def _fill_defaults(opt, is_train):
    """Defaults come from the option definitions (realsr/option_defs.py), nowhere else."""
    fill_defaults(opt, is_train)


def format_resolved_options(opt):
    """The fully resolved options (defaults filled in) as YAML text, in the file's key order."""
    def plain(value):  # tuples and other YAML-unfriendly containers as plain lists/dicts
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
    return yaml.safe_dump(plain(opt), sort_keys=False, default_flow_style=None, width=120)


def _datasets(opt):
    for key, dataset in (opt.get('datasets') or {}).items():
        if not isinstance(dataset, dict):
            continue
        dataset['phase'] = str(key).split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for k in ('dataroot_gt', 'dataroot_lq', 'meta_info_file', 'meta_info'):
            if dataset.get(k) is not None:
                dataset[k] = os.path.expanduser(str(dataset[k]))


def _prepare_default_data(opt, into=None):
    """The quickstart's embedded photos are written on first use (no download).

    With ``into`` (a dry run's temporary folder) a missing default dataset is written there
    instead and the dataset paths are pointed at it; returns ``{(dataset key, path key): original
    path}`` for each path moved, so the caller can point them back."""
    from realsr.data.default_data import DEFAULT_DATA_NAME, ensure_default_data
    moved = {}
    for name, dataset in (opt.get('datasets') or {}).items():
        if isinstance(dataset, dict):
            for k in ('dataroot_gt', 'dataroot_lq'):
                path = dataset.get(k)
                if path is None or os.path.isdir(path):
                    continue
                if into is None:
                    ensure_default_data(path)
                    continue
                parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
                if DEFAULT_DATA_NAME in parts:
                    idx = len(parts) - 1 - parts[::-1].index(DEFAULT_DATA_NAME)
                    dataset[k] = os.path.join(into, *parts[idx:])
                    moved[(name, k)] = path
                    ensure_default_data(dataset[k])
    return moved


def _set_paths(opt, root_path, is_train):
    path = opt['path']
    for key, value in list(path.items()):
        if value is not None and ('resume_state' in key or 'pretrain_network' in key):
            path[key] = os.path.expanduser(str(value))
    name = str(opt['name'])
    if is_train:
        root = os.path.join(path.get('experiments_root') or os.path.join(root_path, 'experiments'), name)
        path['experiments_root'] = root
        path['models'] = os.path.join(root, 'models')
        path['training_states'] = os.path.join(root, 'training_states')
        path['log'] = root
        path['visualization'] = os.path.join(root, 'visualization')
    else:
        root = os.path.join(path.get('results_root') or os.path.join(root_path, 'results'), name)
        path['results_root'] = root
        path['log'] = root
        path['visualization'] = os.path.join(root, 'visualization')


def _dry_run_options(opt, args, root_path, is_train):
    """``parse_options`` for ``--dry_run``: validate and resolve the options like a real run, but
    start no process group, draw no seed, need no GPU and write nothing (a missing default dataset
    goes to a temporary folder that :mod:`realsr.engine.dry_run` deletes). ``args.dry_run_moved``
    and ``args.dry_run_tmp`` say what was moved where."""
    import tempfile
    args.dry_run_tmp = tempfile.mkdtemp(prefix='realsr-dry-run-')
    try:
        args.dry_run_moved = _prepare_default_data(opt, into=args.dry_run_tmp)
        validate_options(opt, is_train=is_train, source=args.opt)
    except BaseException:
        shutil.rmtree(args.dry_run_tmp, ignore_errors=True)
        raise
    compat.apply_debug_settings(opt)
    opt['dist'], opt['rank'], opt['world_size'], opt['device'] = False, 0, 1, 'cpu'
    _set_paths(opt, root_path, is_train)
    return opt, args


def parse_options(root_path, is_train=True, argv=None):
    """Parse the command line and the option file; validate it; set up distribution, the seed
    and the experiment paths. Returns ``(opt, args)``."""
    import torch

    from realsr.runtime.dist import dist_timeout, get_dist_info, init_dist, resolve_backend
    from realsr.runtime.logger import get_root_logger
    from realsr.runtime.rng import set_random_seed

    args = build_arg_parser(is_train).parse_args(argv)
    opt = load_option_file(args.opt)
    apply_force_yml(opt, args.force_yml)
    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train
    if args.debug and not str(opt.get('name', '')).startswith('debug_'):
        opt['name'] = 'debug_' + str(opt.get('name', ''))
    _fill_defaults(opt, is_train)
    expand_dataset_grid(opt, args.opt, known_dataset_keys)  # datasets_grid -> test_* blocks, before phases, scale
    _datasets(opt)
    resolve_auto_networks(opt, args.opt)  # network_<x>: {type: auto} -> the arch of its pretrain file
    if args.dry_run:
        return _dry_run_options(opt, args, root_path, is_train)
    _prepare_default_data(opt)
    validate_options(opt, is_train=is_train, source=args.opt)

    if opt['num_gpu'] == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()
    use_cuda = opt['num_gpu'] != 0
    if use_cuda and not torch.cuda.is_available():
        raise OptionError([f"num_gpu is {opt['num_gpu']} but no GPU is visible; set num_gpu: 0 (CPU) or auto"],
                          args.opt)

    if args.launcher == 'none':
        opt['dist'] = False
        device = torch.device('cuda' if use_cuda else 'cpu')
    else:
        opt['dist'] = True
        dist_params = opt.get('dist_params') or {}
        try:
            backend = resolve_backend(dist_params.get('backend'), use_cuda)
        except ValueError as err:
            raise OptionError([str(err)], args.opt) from err
        device = init_dist(args.launcher, backend=backend, port=dist_params.get('port'), use_cuda=use_cuda,
                           local_rank=args.local_rank, timeout=dist_timeout(dist_params))
    opt['rank'], opt['world_size'] = get_dist_info()
    opt['device'] = str(device)
    get_root_logger()  # so that the switches below log (rank 0 only)
    compat.apply_debug_settings(opt)

    seed = opt.get('manual_seed')
    if seed is None:
        seed = random.randint(1, 10000)
        opt['manual_seed'] = seed
    set_random_seed(int(seed) + opt['rank'])

    _set_paths(opt, root_path, is_train)
    return opt, args


def archive_existing(path):
    """Rename an existing folder to ``<path>_archived_<time>`` (BasicSR's behaviour)."""
    if os.path.exists(path):
        new_name = path + '_archived_' + datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
        print(f'Path already exists. Rename it to {new_name}', file=sys.stderr)
        os.rename(path, new_name)


def make_exp_dirs(opt):
    """Archive an existing experiment/results folder, then create the folders in ``opt.path``."""
    path = opt['path']
    root = path['experiments_root'] if opt['is_train'] else path['results_root']
    archive_existing(root)
    os.makedirs(root, exist_ok=True)
    for key, value in path.items():
        if value is None or any(s in key for s in ('strict_load', 'pretrain_network', 'resume', 'param_key')):
            continue
        if key in ('experiments_root', 'results_root', 'root'):
            continue
        os.makedirs(value, exist_ok=True)


def copy_opt_file(opt_file, experiments_root):
    """Copy the option file into the experiment folder with BasicSR's 3-line header."""
    os.makedirs(experiments_root, exist_ok=True)
    target = os.path.join(experiments_root, os.path.basename(opt_file))
    with open(opt_file, encoding='utf-8') as f:
        lines = f.readlines()
    header = [f'# GENERATE TIME: {datetime.datetime.now()}\n', '# CMD:\n', '# ' + ' '.join(sys.argv) + '\n\n']
    write_atomic(target, ''.join(header + lines))
    shutil.copymode(opt_file, target)
