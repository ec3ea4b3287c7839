"""The editor schema (``realsr-options schema``): valid JSON Schema, every shipped and seed option
file passes it unchanged, and a misspelled key anywhere (arch arguments, losses, datasets,
logger.wandb, ``type``) fails it, as in the option checker."""
import copy
import glob
import json
import os

import jsonschema
import pytest

from realsr.option_tool import build_schema, main
from realsr.utils.yaml_util import yaml_load
from test_option_typos import key_paths, misspell, shipped_files


@pytest.fixture(scope='module')
def validator():
    schema = build_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, opt):
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(opt)]


def test_shipped_and_seed_files_pass(validator, seed_options_dir):
    files = shipped_files() + sorted(glob.glob(str(seed_options_dir / '*' / '*.yml')))
    assert len(files) > 20
    for path in files:
        assert _errors(validator, yaml_load(path)) == [], path


@pytest.mark.parametrize('path', shipped_files(), ids=os.path.basename)
def test_every_misspelled_key_fails_the_schema(validator, path):
    opt = yaml_load(path)
    accepted = []
    for where, key in key_paths(opt):
        bad = copy.deepcopy(opt)
        node = bad
        for part in where:
            node = node[part]
        node[misspell(key)] = node.pop(key)
        if not list(validator.iter_errors(bad)):
            accepted.append('.'.join(map(str, where + (misspell(key),))))
    assert accepted == []


@pytest.mark.parametrize('where, value', [
    (('network_g', 'windw_size'), 8),
    (('train', 'pixel_opt', 'reduciton'), 'mean'),
    (('logger', 'wandb', 'projcet'), 'x'),
    (('datasets', 'train', 'use_flip'), True),
    (('val', 'metrics', 'psnr', 'crop_boder'), 4),
    (('train', 'optim_g', 'betaz'), [0.9, 0.99]),
])
def test_a_typo_is_named(validator, where, value):
    opt = yaml_load(os.path.join(os.path.dirname(shipped_files()[0]), '..', 'train', 'train_MSRResNet_x4.yml'))
    opt['network_g'] = {'type': 'SwinIR', 'upscale': 4} if where[0] == 'network_g' else opt['network_g']
    opt.setdefault('logger', {}).setdefault('wandb', {'project': None})
    node = opt
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    errors = _errors(validator, opt)
    assert any(where[-1] in e for e in errors), errors


def test_wrong_values_fail_the_schema(validator):
    opt = yaml_load(os.path.join(os.path.dirname(shipped_files()[0]), '..', 'train', 'train_MSRResNet_x4.yml'))
    opt['train']['total_iter'] = 0
    opt['val']['pad_mode'] = 'mirror'
    opt['network_g']['type'] = 'MSRResNett'
    errors = _errors(validator, opt)
    assert any(e.startswith('train.total_iter') for e in errors), errors
    assert any(e.startswith('val.pad_mode') for e in errors), errors
    assert any(e.startswith('network_g.type') for e in errors), errors


def test_type_auto_takes_any_arch_argument_but_not_a_typo(validator):
    """network_g: {type: auto} reads the arch from the pretrained file; its other keys override the
    detected arguments (realsr.runtime.model_files.resolve_auto_networks)."""
    opt = yaml_load(os.path.join(os.path.dirname(shipped_files()[0]), '..', 'train', 'train_MSRResNet_x4.yml'))
    opt['network_g'] = {'type': 'auto', 'img_range': 1.0}
    assert _errors(validator, opt) == []
    opt['network_g']['img_rnage'] = 1.0
    errors = _errors(validator, opt)
    assert any('img_rnage' in e for e in errors), errors


def test_the_command_writes_the_schema(tmp_path, capsys):
    out = tmp_path / 'realsr-options.schema.json'
    assert main(['schema', '-o', str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema['$schema'].startswith('https://json-schema.org/draft/2020-12')
    assert 'SwinIR' in schema['$defs']['network']['properties']['type']['enum']
    assert sorted(os.listdir(tmp_path)) == ['realsr-options.schema.json']  # no temporary file left
    assert main(['check', shipped_files()[0]]) == 0
