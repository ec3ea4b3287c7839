"""``--dry_run``: check everything about a run that can be checked without running it.

What a login node can tell before a cluster job starts: the options (already validated by
``parse_options``), every dataset built (folders, file counts, GT/LQ pairing, every listed file
present), every network built with its registry arguments, pretrained files read and their keys
and shapes compared under the file's ``strict_load_*``, the training state a resume would load,
regularizer sites, perceptual-loss VGG weights, and the distributed backend. Prints the resolved
options with their defaults and exits 0, or raises :class:`OptionError` listing every problem
(exit 2). Writes nothing: network parameters live on the ``meta`` device (no memory for weights,
no time for their initialisation), and a default dataset that would be written on first use lives
in a temporary folder removed here.
"""
import contextlib
import json
import os
import shutil

import torch

from realsr import compat
from realsr import option_defs as defs
from realsr.data.file_client import io_backend_options
from realsr.engine.resume import resume_network_labels
from realsr.option_schema import OptionError
from realsr.utils.state_dict import state_dict_diff, strip_module_prefix

# At most this many names of one kind (missing keys, missing files) are listed in one problem.
_LIST_AT_MOST = 8


def run_dry_run(opt, args, is_train):
    """The dry run after ``parse_options(..., argv with --dry_run)``; returns ``None`` (exit 0)."""
    try:
        problems, notes = [], []
        _check_datasets(opt, problems, notes, is_train)
        nets = _check_networks(opt, problems, notes)
        _check_pretrained(opt, nets, problems, notes)
        if is_train:
            _check_resume(opt, problems, notes)
            _check_regularizers(opt, nets.get('network_g'), problems, notes)
            _check_losses(opt, problems, notes)
        _check_launch(opt, args, problems, notes)
        for (key, path_key), original in getattr(args, 'dry_run_moved', {}).items():
            opt['datasets'][key][path_key] = original
            notes.append(f"datasets.{key}.{path_key}: {original} does not exist; the embedded default photos "
                         'would be written there on first use (checked in a temporary copy)')
        if problems:
            raise OptionError(problems, args.opt)
        print(_resolved_text(opt))
        applied = defs.reader_defaults(opt)
        if applied:
            print('# Defaults applied where these keys are read (realsr/option_defs.py; not written above):')
            for key, value in applied:
                print(f'#   {key}: {json.dumps(value)}')
        print('# realsr --dry_run: nothing was written.')
        for note in notes:
            print(f'#   {note}')
        print(f'# {args.opt}: OK, no problem found.')
    finally:
        if getattr(args, 'dry_run_tmp', None):
            shutil.rmtree(args.dry_run_tmp, ignore_errors=True)
    return None


def _resolved_text(opt):
    """The resolved options as YAML, every default filled in."""
    from realsr.options import format_resolved_options
    return format_resolved_options(opt)


# -- datasets ---------------------------------------------------------------------------------
def _listed_files(dataset):
    """Every file path a built dataset will read, where it keeps them as a list."""
    for entry in getattr(dataset, 'paths', None) or []:
        if isinstance(entry, dict):
            yield from (v for k, v in entry.items() if k.endswith('_path'))
        elif isinstance(entry, (str, os.PathLike)):
            yield entry


def _check_datasets(opt, problems, notes, is_train):
    from realsr.data import build_dataset
    for key, ds_opt in (opt.get('datasets') or {}).items():
        where = f'datasets.{key}'
        try:
            dataset = build_dataset(ds_opt)
        except Exception as err:  # each dataset names its folder/file in the message
            problems.append(f"'{where}': {err}")
            continue
        count = len(dataset)
        if count == 0:
            problems.append(f"'{where}': the dataset {ds_opt.get('name')!r} holds no images")
            continue
        if io_backend_options(ds_opt)['type'] == 'disk':
            missing = [p for p in _listed_files(dataset) if not os.path.isfile(p)]
            if missing:
                problems.append(f"'{where}': {len(missing)} listed file(s) do not exist, e.g. "
                                + ', '.join(repr(str(p)) for p in missing[:_LIST_AT_MOST]))
        notes.append(f'{where}: {count} images ({type(dataset).__name__})')
        if is_train and str(key).split('_')[0] == 'train':
            batch = ds_opt.get('batch_size_per_gpu')  # required: a missing one is reported already
            per_epoch = count * int(defs.value(ds_opt, defs.LOADER, 'dataset_enlarge_ratio'))
            if batch is not None and per_epoch < int(batch):
                problems.append(f"'{where}.batch_size_per_gpu': {batch} is more than the {per_epoch} sample(s) "
                                'of an epoch; add images or raise dataset_enlarge_ratio')


# -- networks and their pretrained files ------------------------------------------------------------
@contextlib.contextmanager
def _parameters_on_meta():
    """Every parameter registered meanwhile moves to the ``meta`` device, so the weight
    initialisation after it costs nothing (DRCT's takes seconds on a CPU)."""
    register = torch.nn.Module.register_parameter

    def register_on_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            module._parameters[name] = torch.nn.Parameter(param.to('meta'), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def build_without_memory(net_opt):
    """The network with its parameters on the ``meta`` device (shapes only). Only the parameters:
    with everything on ``meta`` (``with torch.device('meta')``) archs that read a tensor's value in
    ``__init__`` (the ``.item()`` of SwinIR's drop-path schedule) fail."""
    from realsr.archs import build_network
    with _parameters_on_meta():
        return build_network(net_opt)


def _check_networks(opt, problems, notes):
    nets = {}
    for key, net_opt in opt.items():
        if not (str(key).startswith('network_') and isinstance(net_opt, dict)):
            continue
        try:
            net = build_without_memory(net_opt)
        except Exception as err:
            problems.append(f"'{key}': cannot build {net_opt.get('type')!r}: {type(err).__name__}: {err}")
            continue
        nets[key] = net
        params = sum(p.numel() for p in net.parameters())
        notes.append(f'{key}: {type(net).__name__}, {params / 1e6:.2f} M parameters')
    return nets


def _strict_for(path_opt, name):
    if name == 'p':  # DASR/CDDNet: net_p follows strict_load_g unless strict_load_p is set
        return path_opt.get('strict_load_p', path_opt.get('strict_load_g', True))
    return path_opt.get(f'strict_load_{name}', True)


def _names(keys):
    keys = sorted(keys)
    more = f' and {len(keys) - _LIST_AT_MOST} more' if len(keys) > _LIST_AT_MOST else ''
    return ', '.join(keys[:_LIST_AT_MOST]) + more


def _check_pretrained(opt, nets, problems, notes):
    from realsr.runtime.checkpoint import read_network_file
    path_opt = opt.get('path') or {}
    for key, load_path in path_opt.items():
        if not str(key).startswith('pretrain_network_') or load_path is None:
            continue
        name = str(key)[len('pretrain_network_'):]
        net = nets.get(f'network_{name}')
        if net is None:
            continue  # its network was not built (reported above) or a network of another name
        param_key = path_opt.get(f'param_key_{name}', 'params')
        where = f'path.{key}'
        try:
            state = read_network_file(load_path, param_key)
        except Exception as err:
            problems.append(f"'{where}': {err}")
            continue
        state = strip_module_prefix(state)
        if getattr(net, 'is_msrresnet_state_dict', None) is not None and net.is_msrresnet_state_dict(state):
            notes.append(f'{where}: an MSRResNet checkpoint, repeated over the experts of {type(net).__name__}')
            continue
        expected = net.state_dict()
        missing, unexpected, mismatched = state_dict_diff(expected, state)
        mismatched = [f'{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}' for k in mismatched]
        if _strict_for(path_opt, name) and (missing or unexpected or mismatched):
            parts = [f"'{where}': {load_path!r} [{param_key}] does not match network_{name} "
                     f'({type(net).__name__}) under strict_load_{name}: true']
            if missing:
                parts.append(f'missing keys: {_names(missing)}')
            if unexpected:
                parts.append(f'unexpected keys: {_names(unexpected)}')
            if mismatched:
                parts.append(f'shapes differ: {_names(mismatched)}')
            problems.append('; '.join(parts))
            continue
        loaded = len(set(state) & set(expected)) - len(mismatched)
        notes.append(f'{where}: {loaded}/{len(expected)} tensors would load [{param_key}]')


def _check_resume(opt, problems, notes):
    """The training state a run would resume from (``--auto_resume``: the latest one of this
    experiment; else ``path.resume_state``) is read, so a damaged one shows up now."""
    from realsr.runtime import checkpoint
    path_opt = opt.get('path') or {}
    where, state_path = 'path.resume_state', path_opt.get('resume_state')
    if opt.get('auto_resume'):  # the same choice as the run's, skipping damaged or incomplete checkpoints
        latest, _, skipped = checkpoint.find_resumable_state(path_opt['training_states'], path_opt['models'],
                                                             resume_network_labels(opt))
        notes.extend(f'--auto_resume would skip: {reason}' for reason in skipped)
        if latest is None and state_path is None:
            notes.append(f"--auto_resume: no usable training state in {path_opt['training_states']}; would start "
                         'from scratch')
        where, state_path = ('--auto_resume', latest) if latest is not None else (where, state_path)
    if state_path is None:
        return
    try:
        state = checkpoint.load_training_state(state_path)
    except Exception as err:
        problems.append(f"'{where}': {err}")
        return
    notes.append(f"{where}: would resume from {state_path} (iteration {state.get('iter')})")


def _check_regularizers(opt, net_g, problems, notes):
    """Regularizer sites resolve on the built generator (the option file's list and the compat switch)."""
    if net_g is None:
        return
    from realsr.regularizers import build_regularizers
    reg_opts = list(opt.get('regularizers') or []) + compat.simple_align_regularizers(opt)
    for i, reg_opt in enumerate(reg_opts):
        try:
            regs = build_regularizers([reg_opt], net_g)
        except Exception as err:
            problems.append(f"'regularizers[{i}]' ({reg_opt.get('type')}): {err}")
            continue
        for reg in regs:
            notes.append(f"regularizer {type(reg).__name__} at {', '.join(f'{n}:{s}' for _, n, s in reg.attached)}")


def _check_losses(opt, problems, notes):
    """Perceptual losses need VGG weights on disk (realsr never downloads them at run time)."""
    from realsr.archs.vgg_arch import find_vgg_weights
    for key, loss_opt in (opt.get('train') or {}).items():
        if not (str(key).endswith('_opt') and isinstance(loss_opt, dict)) or 'layer_weights' not in loss_opt:
            continue
        try:
            found = find_vgg_weights(loss_opt.get('vgg_type', 'vgg19'), loss_opt.get('pretrained_path'))
        except (FileNotFoundError, ValueError) as err:
            problems.append(f"'train.{key}': {err}")
            continue
        notes.append(f'train.{key}: VGG weights {found}')


# -- devices and the launcher ------------------------------------------------------------------
def _check_launch(opt, args, problems, notes):
    from realsr.runtime.dist import resolve_backend
    num_gpu = opt.get('num_gpu', 'auto')
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if num_gpu == 'auto':
        notes.append(f'num_gpu: auto -> every GPU visible where it runs ({here} visible here; none means the CPU)')
    elif num_gpu:
        notes.append(f'num_gpu: {num_gpu} -> would use {num_gpu} GPU(s) ({here} visible here)')
    else:
        notes.append('num_gpu: 0 -> would run on the CPU')
    if args.launcher == 'none':
        return
    backend = (opt.get('dist_params') or {}).get('backend')
    use_cuda = bool(num_gpu) if num_gpu != 'auto' else None
    try:
        if use_cuda is None:  # decided on the compute node: only a name that works on neither is wrong
            resolve_backend(backend, True)
            chosen = backend or 'nccl on GPUs, gloo on a CPU'
        else:
            chosen = resolve_backend(backend, use_cuda)
    except ValueError as err:
        problems.append(str(err))
        return
    notes.append(f'--launcher {args.launcher}: one process per GPU, process-group backend {chosen}')
