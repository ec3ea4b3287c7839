"""YAML loading that reads BasicSR option files the way BasicSR does, minus one trap.

PyYAML follows YAML 1.1, where ``2e-4`` and ``5e3`` are strings; BasicSR files therefore write
``!!float 2e-4``. Both spellings load as floats here, so a forgotten ``!!float`` is not a silent
string. Everything else (``~`` is None, ``yes``/``no`` booleans, ordering) is PyYAML's.
"""
import os
import re

import yaml

try:
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader

_EXP_FLOAT = re.compile(r'^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$')


class OptionLoader(_BaseLoader):
    """SafeLoader that also reads exponent-only floats (``5e3``) as floats."""


OptionLoader.add_implicit_resolver('tag:yaml.org,2002:float', _EXP_FLOAT, list('-+0123456789'))


def yaml_load_text(text):
    """Load YAML from text (never treated as a path)."""
    return yaml.load(text, Loader=OptionLoader)


def yaml_load(f):
    """Load YAML from a path or a string."""
    if isinstance(f, (str, os.PathLike)) and os.path.isfile(f):
        with open(f, encoding='utf-8') as stream:
            return yaml.load(stream, Loader=OptionLoader)
    return yaml.load(f, Loader=OptionLoader)


def yaml_dump(data):
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
