"""The option definitions (realsr/option_defs.py) against the code: every defined option is read
somewhere, every option the package reads is defined, the built-in tables cover every registered
model, dataset and metric, and the defaults the checker mirrors agree with their readers.

"Read" is checked statically: a definition counts as read when its name is a string in some
module of the package other than the definitions and the checker (for the DASR and second-stage
keys built as ``base + suffix``, both parts), so adding a definition without a reader fails."""
import ast
import inspect
import os
import re

import yaml

from realsr import option_defs as defs
from realsr.option_schema import _builtin_metric_params, validate_options
from realsr.options import _datasets, format_resolved_options
from realsr.utils.yaml_util import yaml_load

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'realsr')
NOT_READERS = {'option_defs.py', 'option_schema.py', 'option_tool.py'}
SUFFIXES = ('2', '_weak1', '_standard1')


def _reader_trees():
    for dirpath, _, filenames in os.walk(PACKAGE_DIR):
        for filename in filenames:
            if filename.endswith('.py') and filename not in NOT_READERS:
                path = os.path.join(dirpath, filename)
                with open(path, encoding='utf-8') as f:
                    yield os.path.relpath(path, PACKAGE_DIR), ast.parse(f.read(), path)


def _strings(trees):
    """Every string constant of the readers, plus the keyword parameters of the file backends
    (the io_backend options reach them as keyword arguments) and the attributes read from the
    step settings (``settings.use_amp``: runtime.step_options reads the step options into them)."""
    out = set()
    for rel, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value)
            elif rel == os.path.join('data', 'file_client.py') and isinstance(node, ast.arg):
                out.add(node.arg)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and \
                    getattr(node.value, 'id', getattr(node.value, 'attr', None)) in ('settings', 'step_settings'):
                out.add(node.attr)
    return out


# Options whose only reader is a cross-field check of the checker, each with why it exists at all.
CHECKED_ONLY = {
    'num_networks': "DASR's files carry it; the experts are built from network_g.num_models and "
                    'network_p.num_networks, and the checker requires all three to agree',
}


def unread_definitions(definitions, strings):
    def read(name):
        return name in CHECKED_ONLY or name in strings or any(name.endswith(s) and name[:-len(s)] in strings and s in strings
                                      for s in SUFFIXES)
    return sorted({path for path, o in definitions if not read(o.name)})


def test_every_defined_option_is_read():
    strings = _strings(_reader_trees())
    assert unread_definitions(list(defs.all_definitions()), strings) == []


def test_a_definition_without_a_reader_is_caught():
    strings = _strings(_reader_trees())
    fake = ('logger.print_frequency_of_nothing', defs.Option('print_frequency_of_nothing', 'int', 5, 'no reader'))
    assert unread_definitions(list(defs.all_definitions()) + [fake], strings) == ['logger.print_frequency_of_nothing']


_OPT_NAME = re.compile(r'(^|_)opt$|^opt')


def option_reads(trees):
    """``{key: [where]}`` of ``<x>opt[...]`` / ``<x>opt.get(...)`` reads with a literal key."""
    reads = {}
    for rel, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                target, key = node.value, node.slice.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'get' \
                    and node.args and isinstance(node.args[0], ast.Constant):
                target, key = node.func.value, node.args[0].value
            else:
                continue
            name = target.id if isinstance(target, ast.Name) else getattr(target, 'attr', '')
            if isinstance(key, str) and _OPT_NAME.search(name) and not name.startswith('optim'):
                reads.setdefault(key, []).append(f'{rel}:{node.lineno}')
    return reads


def _defined_names():
    from realsr.registry import ARCH_REGISTRY, LOSS_REGISTRY
    names = {o.name for _, o in defs.all_definitions()}
    names |= {slot for slots in defs.LOSS_SLOTS.values() for slot in slots}
    names |= {f'{prefix}{label}' for labels in defs.NETWORK_SLOTS.values() for label in labels
              for prefix in ('network_', 'pretrain_network_', 'param_key_', 'strict_load_')}
    for registry in (ARCH_REGISTRY, LOSS_REGISTRY):  # network_g.* and train.<loss>.* arguments
        for _, cls in registry:
            names |= set(inspect.signature(cls).parameters)
    return names


def undefined_reads(reads, defined):
    return {key: where for key, where in reads.items() if key not in defined}


def test_every_option_read_is_defined():
    assert undefined_reads(option_reads(_reader_trees()), _defined_names()) == {}


def test_a_read_without_a_definition_is_caught():
    tree = ast.parse("def f(opt, train_opt):\n    return opt['undefined_key'], train_opt.get('other_undefined')\n")
    reads = option_reads([('fake.py', tree)])
    assert set(undefined_reads(reads, _defined_names())) == {'undefined_key', 'other_undefined'}


# Keys left out, each with why: 'type' names a different thing in every section (a dataset, an
# arch, a loss, a metric; only io_backend's has a default, read through option_defs). 'num_gpu' and
# 'manual_seed' are resolved by parse_options ('auto' -> the number of visible GPUs; a random seed when
# none is set), so no reader sees a defined default; options built in code without them run on the
# CPU with seed 0.
CODE_FALLBACKS = {'num_gpu', 'manual_seed', 'type'}


def _defaults():
    """``{key: is there a non-None default in some section}`` over every definition."""
    out = {}
    for _, o in defs.all_definitions():
        out[o.name] = out.get(o.name, False) or o.default is not None
    return out


_NOT_OPTIONS = {'state'}  # receivers of .get() that are checkpoint contents, not options


def repeated_reader_defaults(trees):
    """Readers that write an option's default themselves instead of taking it from the definitions:
    ``x.get('<key>', <fallback>)`` and ``x.get('<key>') or <fallback>``, where the key has a defined
    default, or the fallback is a literal value (a default the definitions should hold). Fallbacks
    that mean "absent" (None, empty containers, '' or '?' in messages) and computed ones (another
    option, a path) are not defaults."""
    defaults = {k: v for k, v in _defaults().items() if k not in CODE_FALLBACKS}
    out = []
    for rel, tree in trees:
        for node in ast.walk(tree):
            call, fallback = None, None
            if isinstance(node, ast.Call) and len(node.args) == 2:
                call, fallback = node, node.args[1]
            elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and isinstance(node.values[0], ast.Call):
                call, fallback = node.values[0], node.values[-1]
                if len(call.args) != 1:
                    continue
            if call is None or not (isinstance(call.func, ast.Attribute) and call.func.attr == 'get'
                                    and call.args and isinstance(call.args[0], ast.Constant)):
                continue
            key, receiver = call.args[0].value, call.func.value
            if key not in defaults or (isinstance(receiver, ast.Name) and receiver.id in _NOT_OPTIONS):
                continue
            if not _means_absent(fallback) and (defaults[key] or _is_literal(fallback)):
                out.append(f'{rel}:{node.lineno}: {ast.unparse(node)}')
    return out


def _means_absent(node):
    if isinstance(node, ast.Constant):
        return node.value in (None, '', '?')
    return isinstance(node, (ast.Dict, ast.List, ast.Tuple)) and not (node.keys if isinstance(node, ast.Dict)
                                                                      else node.elts)


def _is_literal(node):
    try:
        ast.literal_eval(node)
        return True
    except ValueError:
        return False


def test_defaults_live_in_the_definitions_only():
    assert repeated_reader_defaults(_reader_trees()) == []
    repeated = ast.parse("def f(opt):\n    return (opt['logger'].get('print_freq', 100), opt.get('tile_pad') or 10, "
                         "opt.get('gt_size', 96))\n")
    assert len(repeated_reader_defaults([('fake.py', repeated)])) == 3
    read_right = ast.parse("def f(opt):\n    return (defs.value(opt.get('tile'), defs.TILE, 'tile_pad'), "
                           "opt.get('val') or {}, opt.get('name', ''), "
                           "path.get('results_root') or root + '/results')\n")
    assert repeated_reader_defaults([('fake.py', read_right)]) == []


def test_builtin_tables_cover_every_registered_model_and_dataset():
    from realsr.registry import DATASET_REGISTRY, MODEL_REGISTRY
    for name, cls in MODEL_REGISTRY:
        bases = [c.__name__ for c in cls.__mro__]
        assert any(b in defs.LOSS_SLOTS for b in bases), name
        assert any(b in defs.NETWORK_SLOTS for b in bases), name
    assert {name for name, _ in DATASET_REGISTRY} <= set(defs.DATASET_TYPES)


def test_metric_arguments_read_from_source_match_the_signatures():
    from realsr.registry import METRIC_REGISTRY
    from_source = _builtin_metric_params()
    registered = dict(iter(METRIC_REGISTRY))
    assert set(from_source) == set(registered)
    for name, fn in registered.items():
        params = inspect.signature(fn).parameters
        named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        required = [n for n in named if params[n].default is inspect.Parameter.empty]
        assert from_source[name] == (named, required), name


def test_step_settings_hold_every_step_option():
    """read_step_options turns each STEP_OPTIONS definition into a StepSettings field (the alias
    use_grad_clip into grad_clip), with the defined defaults when the file sets none."""
    import dataclasses
    from realsr.runtime.step_options import StepSettings, read_step_options
    names = {o.name for options in defs.STEP_OPTIONS.values() for o in options} - {'use_grad_clip'}
    assert {f.name for f in dataclasses.fields(StepSettings)} == names
    settings = read_step_options({})
    for options in defs.STEP_OPTIONS.values():
        for o in options:
            if o.name != 'use_grad_clip':
                assert getattr(settings, o.name) == o.default, o.name
    assert read_step_options({'train': {'use_grad_clip': True}}).grad_clip is True


def test_every_definition_has_a_doc_and_a_known_kind():
    from realsr.option_schema import KINDS
    for path, o in defs.all_definitions():
        assert o.doc and len(o.doc) < 250, path
        assert all(k in KINDS for k in o.kind.split('|')), path


def test_defaults_are_filled_and_printed(tmp_path):
    """parse_options fills the defaults from the definitions; format_resolved_options prints them
    as YAML that loads back to the same options and validates again."""
    opt = yaml_load(os.path.join(os.path.dirname(PACKAGE_DIR), 'options', 'train', 'train_MSRResNet_x4.yml'))
    del opt['logger']['print_freq']
    opt['val'].pop('save_img', None)
    opt.pop('num_gpu', None)
    defs.fill_defaults(opt, is_train=True)
    _datasets(opt)
    assert opt['logger']['print_freq'] == 100 and opt['val']['save_img'] is False and opt['num_gpu'] == 'auto'
    text = format_resolved_options(opt)
    again = yaml.safe_load(text)
    assert again == opt
    validate_options(again, is_train=True, check_paths=False)
    assert 'print_freq: 100' in text
