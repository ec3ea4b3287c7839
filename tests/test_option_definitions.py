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
from realsr.option_schema import PIPELINE_SIZE_DEFAULTS, _builtin_metric_params, validate_options
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
    (the io_backend options reach them as keyword arguments)."""
    out = set()
    for rel, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value)
            elif rel == os.path.join('data', 'file_client.py') and isinstance(node, ast.arg):
                out.add(node.arg)
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


# Keys left out: options built in code (tests, scripts) without num_gpu run on the CPU, while
# parse_options fills 'auto' for option files; 'type' names a different thing in every section.
CODE_FALLBACKS = {'num_gpu', 'type'}


def conflicting_reader_defaults(trees):
    """``.get('<defined key>', <constant>)`` whose constant is none of that key's defined defaults
    (where a default is defined): a second default that has drifted from the definitions."""
    defaults = {}
    for _, o in defs.all_definitions():
        if o.default is not None:
            defaults.setdefault(o.name, set()).add(repr(o.default))
    out = []
    for rel, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'get' \
                    and len(node.args) == 2 and all(isinstance(a, ast.Constant) for a in node.args):
                key, value = node.args[0].value, node.args[1].value
                if key in defaults and key not in CODE_FALLBACKS and repr(value) not in defaults[key]:
                    out.append(f'{rel}:{node.lineno}: {key} defaults to {value!r}, defined as {defaults[key]}')
    return out


def test_reader_fallbacks_agree_with_the_definitions():
    assert conflicting_reader_defaults(_reader_trees()) == []
    drifted = ast.parse("def f(opt):\n    return opt['logger'].get('print_freq', 50)\n")
    assert len(conflicting_reader_defaults([('fake.py', drifted)])) == 1


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


def test_size_bound_defaults_match_the_pipeline():
    from realsr.degradations.pipeline import DEFAULTS
    for key, value in PIPELINE_SIZE_DEFAULTS.items():
        assert DEFAULTS[key] == value, key


def test_dist_timeout_definition_matches_its_reader():
    from realsr.runtime import dist
    timeout = defs.by_name(defs.DIST_PARAMS)['timeout']
    assert timeout.default == dist.DEFAULT_TIMEOUT_S and timeout.doc == dist.TIMEOUT_DOC


def test_step_options_are_listed_with_their_definitions():
    from realsr.runtime.step_options import STEP_OPTIONS
    listed = {(path.rsplit('.', 1)[0] if '.' in path else '', o.name) for path, o in defs.all_definitions()}
    for o in STEP_OPTIONS:
        section = 'datasets.RealESRGANDataset' if o.section == 'datasets.train' else o.section
        assert (section, o.key) in listed, o


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
