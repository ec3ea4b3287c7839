"""``realsr-options``: the option definitions for editors and people.

``realsr-options schema [-o FILE]`` writes a JSON Schema (draft 2020-12) of an option file, built
from realsr/option_defs.py and the signatures of every registered arch, loss, regularizer,
metric and scheduler, so that an editor reading YAML schemas completes keys and flags typos. In
an option file, the first line

    # yaml-language-server: $schema=realsr-options.schema.json

points the YAML language server (VS Code's YAML extension, and others) at it.
``realsr-options check FILE...`` validates files without paths (as the editor would).
"""
import argparse
import inspect
import json
import numbers
import os
import sys

from realsr import option_defs as defs
from realsr.utils.atomic_write import write_atomic

SCHEMA_DIALECT = 'https://json-schema.org/draft/2020-12/schema'
_JSON_TYPES = {'int': 'integer', 'num': 'number', 'bool': 'boolean', 'str': 'string', 'list': 'array',
               'dict': 'object'}


def _kind_schema(kind):
    if 'any' in kind.split('|'):
        return {}
    return {'type': sorted({_JSON_TYPES[k] for k in kind.split('|')} | {'null'})}  # `~`: not set


def option_schema(o):
    """The JSON Schema of one defined option."""
    out = _kind_schema(o.kind)
    if o.doc:
        out['description'] = o.doc + ('' if o.default is None else f' (default: {o.default})')
    if o.choices:
        out['enum'] = list(o.choices) + [None]
    if o.minimum is not None:
        out['minimum'] = o.minimum
    return out


def _object(options, patterns=None, extra=None, closed=True):
    out = {'type': 'object', 'properties': {o.name: option_schema(o) for o in options}}
    out['properties'].update(extra or {})
    if patterns:
        out['patternProperties'] = patterns
    if closed:
        out['additionalProperties'] = False
    return out


def _value_schema(default):
    """What a keyword argument may be, judged from its default (numbers stay lenient: 64 or 64.0)."""
    if default is inspect.Parameter.empty or default is None:
        return {}
    if isinstance(default, bool):
        return {'type': ['boolean', 'null']}
    if isinstance(default, numbers.Real):
        return {'type': ['number', 'null']}
    if isinstance(default, str):
        return {'type': ['string', 'null']}
    if isinstance(default, (list, tuple)):
        return {'type': ['array', 'null']}
    return {}


def _signature_properties(target, skip=()):
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}, [], True
    named = {n: p for n, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in ('self',) + tuple(skip)}
    required = [n for n, p in named.items() if p.default is p.empty]
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    return {n: _value_schema(p.default) for n, p in named.items()}, required, var_kw


def _typed(entries, description, common=None):
    """An object with ``type`` naming one of ``entries`` ({name: (properties, required, open)}) and
    that entry's arguments; anything else is flagged (``unevaluatedProperties``)."""
    common = dict(common or {})
    out = {'type': 'object', 'description': description, 'required': ['type'],
           'properties': {'type': {'enum': sorted(entries)}, **common}, 'allOf': [],
           'unevaluatedProperties': False}
    for name in sorted(entries):
        props, required, var_kw = entries[name]
        then = {'properties': props}
        if required:
            then['required'] = required
        if var_kw:
            then['additionalProperties'] = True
        out['allOf'].append({'if': {'properties': {'type': {'const': name}}, 'required': ['type']}, 'then': then})
    return out


def _registry_entries(registry, skip=()):
    out = {}
    for name, obj in registry:
        props, required, var_kw = _signature_properties(obj, skip)
        refine = getattr(obj, 'option_json_schema', None)  # e.g. PerceptualLoss: its VGG layer names
        out[name] = ({**props, **(refine() if refine is not None else {})}, required, var_kw)
    return out


def _auto_arch_entry(arch_entries):
    """``network_<x>: {type: auto}``: the arch comes from ``path.pretrain_network_<x>``; the other
    keys override the detected arguments, so any argument of some registered arch is allowed
    (a typo that no arch has is still flagged)."""
    names = sorted({n for props, _, _ in arch_entries.values() for n in props})
    return {n: {'description': "overrides the argument detected from path.pretrain_network_<x>"} for n in names}, \
        [], False


def _metric_entries():
    from realsr.option_schema import _builtin_metric_params
    out = {}
    for name, (params, required) in _builtin_metric_params().items():
        props = {p: {} for p in params if p not in ('img', 'img2')}
        out[name] = (props, [r for r in required if r not in ('img', 'img2')], False)
    return out


def _optimizer_entries():
    import torch
    out = {}
    for name in dir(torch.optim):
        cls = getattr(torch.optim, name)
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer:
            out[name] = _signature_properties(cls, skip=('params',))
    return out


def _scheduler_entries():
    from realsr.models import lr_scheduler
    from realsr.option_schema import SCHEDULERS
    return {name: _signature_properties(lr_scheduler.get_scheduler_class(name), skip=('optimizer', 'last_epoch'))
            for name in SCHEDULERS}


def _dataset_schema(phase):
    entries = {}
    for name in defs.DATASET_TYPES:
        own = defs.dataset_options(name, phase)
        entries[name] = ({o.name: option_schema(o) for o in own if o.name != 'type'}, [], False)
    io = _object(defs.IO_BACKEND)
    return _typed(entries, f'a {phase} dataset', {'io_backend': io})


def _grid_schema():
    """One ``datasets_grid`` mapping (realsr.benchmark.grid): its own keys and a dataset block's."""
    from realsr.benchmark.grid import ORDERS, PREFIXES
    from realsr.degradations.testset_variants import VARIANTS
    entry = {'oneOf': [{'type': 'string'}, {'type': 'object', 'required': ['name'], 'additionalProperties': False,
                                            'properties': {'name': {'type': 'string'}, 'folder': {'type': 'string'}}}]}
    own = {
        'datasets': {'type': ['array', 'string'], 'items': entry, 'description': 'test sets: names or {name, folder}'},
        'degradations': {'oneOf': [{'const': 'all'}, {'type': 'array', 'items': {'enum': list(VARIANTS)}}],
                         'description': "'all' or a list of the papers' degradation folders"},
        'order': {'enum': list(ORDERS)}, 'key_prefix': {'enum': list(PREFIXES)},
    }
    block = {o.name: option_schema(o) for o in defs.LOADER + defs.DATASET_TYPES['PairedImageDataset']}
    block['io_backend'] = _object(defs.IO_BACKEND)
    return {'type': 'object', 'properties': {**block, **own}, 'additionalProperties': False,
            'required': ['datasets', 'degradations', 'dataroot_lq']}


def build_schema():
    """The JSON Schema (a dict) of a realsr option file."""
    from realsr.registry import ARCH_REGISTRY, LOSS_REGISTRY, REGULARIZER_REGISTRY
    from realsr.runtime.model_files import AUTO_ARCH
    arch_entries = _registry_entries(ARCH_REGISTRY)
    arch_entries[AUTO_ARCH] = _auto_arch_entry(arch_entries)
    loss = {'$ref': '#/$defs/loss'}
    slots = sorted({s for slots in defs.LOSS_SLOTS.values() for s in slots})
    train = _object(defs.TRAIN, extra={
        **{s: loss for s in slots}, 'optim_g': {'$ref': '#/$defs/optimizer'}, 'optim_d': {'$ref': '#/$defs/optimizer'},
        'scheduler': {'$ref': '#/$defs/scheduler'}})
    val = _object(defs.VAL, extra={'metrics': {'type': ['object', 'null'],
                                               'additionalProperties': {'$ref': '#/$defs/metric'}},
                                   'tile': _object(defs.TILE)})
    logger = _object(defs.LOGGER, extra={'wandb': _object(defs.WANDB)})
    path_patterns = {p.pattern: {**_kind_schema(kind), 'description': doc} for p, kind, doc in defs.PATH_PATTERNS}
    phase_pattern = '^(' + '|'.join(defs.PHASES) + ')(_.*)?$'
    datasets = {'type': 'object', 'additionalProperties': False,
                'patternProperties': {'^train(_.*)?$': {'$ref': '#/$defs/dataset_train'},
                                      '^(val|test)(_.*)?$': {'$ref': '#/$defs/dataset_eval'}},
                'description': f'dataset blocks; keys match {phase_pattern}'}
    top = _object(defs.TOP_LEVEL, patterns={defs.NETWORK_KEY.pattern: {'$ref': '#/$defs/network'}}, extra={
        'datasets': datasets, 'train': train, 'val': val, 'logger': logger, 'path': _object(defs.PATH, path_patterns),
        'dist_params': _object(defs.DIST_PARAMS), 'tile': _object(defs.TILE),
        'regularizers': {'type': ['array', 'null'], 'items': {'$ref': '#/$defs/regularizer'}},
        'datasets_grid': {'oneOf': [{'$ref': '#/$defs/dataset_grid'}, {'type': 'null'},
                                    {'type': 'array', 'items': {'$ref': '#/$defs/dataset_grid'}}],
                          'description': 'datasets x degradations, expanded into test_* blocks'}})
    top['required'] = ['name', 'model_type']
    top['$defs'] = {
        'network': _typed(arch_entries, "a registered arch and its constructor arguments, or 'auto': the arch "
                          'of path.pretrain_network_<x>'),
        'loss': _typed(_registry_entries(LOSS_REGISTRY), 'a registered loss and its arguments'),
        'regularizer': _typed(_registry_entries(REGULARIZER_REGISTRY), 'a registered regularizer and its arguments'),
        'metric': _typed(_metric_entries(), 'a registered metric and its arguments',
                         {o.name: option_schema(o) for o in defs.METRIC if o.name != 'type'}),
        'optimizer': _typed(_optimizer_entries(), 'a torch.optim optimizer and its arguments'),
        'scheduler': _typed(_scheduler_entries(), 'a learning-rate scheduler and its arguments'),
        'dataset_train': _dataset_schema('train'),
        'dataset_eval': _dataset_schema('val'),
        'dataset_grid': _grid_schema(),
    }
    return {'$schema': SCHEMA_DIALECT, 'title': 'realsr option file', **top}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='realsr-options', description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    schema = sub.add_parser('schema', help='write the JSON Schema of option files (for editors)')
    schema.add_argument('-o', '--output', help='file to write (default: standard output)')
    check = sub.add_parser('check', help='validate option files (keys, kinds, values; no paths)')
    check.add_argument('files', nargs='+')
    args = parser.parse_args(argv)
    if args.command == 'schema':
        text = json.dumps(build_schema(), indent=1) + '\n'
        if args.output:
            write_atomic(args.output, text)
            print(f'wrote {args.output}', file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    from realsr.option_schema import OptionError, validate_options
    from realsr.options import _datasets, load_option_file
    from realsr.runtime.model_files import resolve_auto_networks
    status = 0
    for path in args.files:
        try:
            opt = load_option_file(path)
            _datasets(opt)
            resolve_auto_networks(opt, path)  # network_<x>: {type: auto} is checked as the arch of its file
            validate_options(opt, is_train=opt.get('train') is not None, check_paths=False, source=path)
            print(f'{path}: ok')
        except OptionError as err:
            print(err, file=sys.stderr)
            status = 2
    return status


if __name__ == '__main__':
    sys.exit(main())
