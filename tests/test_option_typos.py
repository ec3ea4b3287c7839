"""Misspelling any key, at any depth, of every shipped option file and every seed file is rejected,
naming the misspelled key. Driven by the files: each key of each mapping (lists of mappings
included) is misspelled in turn and the file validated."""
import copy
import glob
import os

import pytest

from realsr.option_schema import OptionError, validate_options
from realsr.options import _datasets
from realsr.utils.yaml_util import yaml_load

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shipped_files():
    return sorted(glob.glob(os.path.join(REPO_ROOT, 'options', '*', '*.yml')))


def is_train_file(path):
    return os.sep + 'train' + os.sep in path or os.path.basename(path).startswith('train')


def misspell(key):
    """Two neighbouring different letters swapped in the middle of the key (or a letter added)."""
    mid = len(key) // 2
    for i in sorted(range(len(key) - 1), key=lambda i: abs(i - mid)):
        if key[i] != key[i + 1] and key[i].isalpha() and key[i + 1].isalpha():
            return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    return key + 'x'


def key_paths(node, path=()):
    """Every (path to a mapping, key) of a nested option dict. The names of val.metrics entries are
    the user's own labels (any name is valid): their keys are walked, they are not misspelled."""
    if isinstance(node, dict):
        free_names = path[-2:] == ('val', 'metrics')
        for key, value in node.items():
            if not free_names and isinstance(key, str):
                yield path, key
            yield from key_paths(value, path + (key,))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from key_paths(item, path + (i,))


def _node(opt, path):
    for part in path:
        opt = opt[part]
    return opt


def _load(path):
    opt = yaml_load(path)
    _datasets(opt)  # the parse step: phase from the key, scale copied into each dataset
    return opt


def _check_all_typos(path):
    opt = _load(path)
    is_train = is_train_file(path)
    validate_options(copy.deepcopy(opt), is_train=is_train, check_paths=False)  # the file itself is valid
    accepted, count = [], 0
    for where, key in key_paths(opt):
        if key in ('phase', 'scale') and len(where) == 2 and where[0] == 'datasets':
            continue  # written by the parse step (_datasets), not by the user
        typo = misspell(key)
        bad = copy.deepcopy(opt)
        node = _node(bad, where)
        node[typo] = node.pop(key)
        count += 1
        try:
            validate_options(bad, is_train=is_train, check_paths=False)
        except OptionError as err:
            if not any(typo in p for p in err.problems):
                accepted.append(('.'.join(map(str, where + (typo,))), err.problems))
            continue
        accepted.append(('.'.join(map(str, where + (typo,))), 'accepted'))
    return accepted, count


@pytest.mark.parametrize('path', shipped_files(), ids=os.path.basename)
def test_every_misspelled_key_of_a_shipped_file_is_rejected(path):
    accepted, count = _check_all_typos(path)
    assert count > 10
    assert accepted == [], accepted


def test_every_misspelled_key_of_a_seed_file_is_rejected(seed_options_dir):
    files = sorted(glob.glob(str(seed_options_dir / '*' / '*.yml')))
    assert len(files) >= 10
    for path in files:
        accepted, count = _check_all_typos(path)
        assert count > 10, path
        assert accepted == [], (path, accepted)


def test_the_misspellings_cover_every_section():
    """The walk reaches the nested sections the issue names: arch arguments, losses, datasets,
    logger.wandb and the 'type' keys themselves."""
    seen = set()
    for path in shipped_files():
        for where, key in key_paths(_load(path)):
            seen.add('.'.join(map(str, where[:1])) + ('.type' if key == 'type' else ''))
            if where[:2] == ('logger', 'wandb'):
                seen.add('logger.wandb')
            if where[:1] == ('train',) and str(where[1:2][0] if where[1:] else '').endswith('_opt'):
                seen.add('train.<loss>')
    assert {'network_g', 'network_g.type', 'datasets', 'train', 'train.<loss>', 'val', 'logger', 'logger.wandb',
            'path', 'regularizers', 'regularizers.type', 'datasets_grid'} <= seen, seen


def test_misspell_changes_the_key():
    assert misspell('type') == 'tyep'
    assert misspell('network_g') != 'network_g'
    assert misspell('lr') == 'rl'
