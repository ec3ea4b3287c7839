"""safetensors network files: the layout (param keys as prefixes, realsr's metadata), the option
that picks the format, training + --auto_resume + realsr-test with safetensors, and reading other
tools' bare safetensors files."""
import json
import re

import pytest
import torch
from safetensors.torch import save_file

from realsr.archs import build_network
from realsr.option_schema import OptionError, validate_options
from realsr.runtime import checkpoint, model_files

from conftest import write_pair_folders
from test_train_e2e import TEST_PY, TRAIN_PY, run, train_options, write_yaml

NET_OPT = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4}


def _net(seed):
    torch.manual_seed(seed)
    return build_network(NET_OPT)


def test_round_trip_keys_dtypes_and_metadata(tmp_path):
    net, ema = _net(0), _net(1)
    ema.register_buffer('counter', torch.tensor([3, 4], dtype=torch.int64))  # a non-float entry survives too
    net.register_buffer('counter', torch.tensor([1, 2], dtype=torch.int64))
    ema.half()
    path = tmp_path / 'net_g_7.safetensors'
    meta = model_files.arch_metadata({**NET_OPT, 'depths': (2, 2)}, 7)
    checkpoint.save_network([net, ema], str(path), ['params', 'params_ema'], metadata=meta)
    assert not list(tmp_path.glob('.*tmp-*')), 'the temporary file must be renamed into place'

    ckpt = model_files.load_network_dict(str(path))
    assert list(ckpt) == ['params', 'params_ema']
    for key, source in (('params', net), ('params_ema', ema)):
        expected = source.state_dict()
        assert set(ckpt[key]) == set(expected)
        for name, tensor in expected.items():
            assert ckpt[key][name].dtype == tensor.dtype, name
            assert torch.equal(ckpt[key][name], tensor), name  # storage round trip: bit-exact
    stored = model_files.read_metadata(str(path))
    assert stored['format'] == 'realsr' and stored['iteration'] == '7' and stored['arch'] == 'MSRResNet'
    assert json.loads(stored['param_keys']) == ['params', 'params_ema']
    assert stored['realsr_version'] and json.loads(stored['arch_args'])['depths'] == [2, 2]
    assert model_files.arch_from_metadata(str(path)) == ('MSRResNet', {k: v for k, v in NET_OPT.items()
                                                                       if k != 'type'} | {'depths': [2, 2]})
    # load_network dispatches on the suffix, BasicSR's param-key fallback included
    fresh = _net(2)
    fresh.register_buffer('counter', torch.zeros(2, dtype=torch.int64))
    checkpoint.load_network(fresh, str(path), param_key='params')
    assert torch.equal(fresh.conv_first.weight, net.conv_first.weight)
    assert checkpoint.read_network_file(str(path), 'params_ema')['counter'].tolist() == [3, 4]


def test_bare_safetensors_from_other_tools_load_as_a_state_dict(tmp_path):
    net = _net(0)
    path = tmp_path / 'community.safetensors'
    save_file(dict(net.state_dict()), str(path))  # no realsr metadata, no prefixes
    fresh = _net(1)
    checkpoint.load_network(fresh, str(path), param_key='params_ema')
    assert torch.equal(fresh.conv_last.weight, net.conv_last.weight)
    assert model_files.arch_from_metadata(str(path)) is None


def test_unreadable_safetensors_names_the_file(tmp_path):
    path = tmp_path / 'broken.safetensors'
    path.write_bytes(b'not a safetensors file')
    with pytest.raises(RuntimeError, match='broken.safetensors'):
        checkpoint.read_network_file(str(path))


def _logger_problems(tmp_path, **logger_opt):
    folders = write_pair_folders(tmp_path / 'data', n_train=2, n_val=1)
    opt = train_options(folders, 'fmt')
    opt['logger'].update(logger_opt)
    try:
        validate_options(opt, is_train=True)
    except OptionError as err:
        return str(err)
    return ''


def test_save_format_option_typo_is_rejected(tmp_path):
    assert ("unknown key 'logger.save_checkpoint_fromat'; did you mean 'save_checkpoint_format'"
            in _logger_problems(tmp_path, save_checkpoint_fromat='safetensors'))
    assert _logger_problems(tmp_path, save_checkpoint_format='safetensors') == ''


def test_save_format_option_bad_value_is_rejected(tmp_path):
    problems = _logger_problems(tmp_path, save_checkpoint_format='ckpt')
    assert "'logger.save_checkpoint_format'" in problems and 'ckpt' in problems
    # the reader refuses it too (an option dict that skipped the checker)
    with pytest.raises(ValueError, match='pth, safetensors'):
        model_files.save_checkpoint_format({'logger': {'save_checkpoint_format': 'ckpt'}})
    assert model_files.save_checkpoint_format({'logger': {'save_checkpoint_format': 'safetensors'}}) == 'safetensors'
    assert model_files.save_checkpoint_format({}) == 'pth'


def test_train_safetensors_kill_auto_resume_and_test(tmp_path):
    folders = write_pair_folders(tmp_path / 'data', n_train=6, n_val=1)
    opt = train_options(folders, 'st', **{'train.total_iter': 4, 'logger.save_checkpoint_freq': 2,
                                          'logger.use_tb_logger': False, 'val.val_freq': 100,
                                          'datasets.train.num_worker_per_gpu': 0})
    opt['logger']['save_checkpoint_format'] = 'safetensors'
    opt_file = write_yaml(tmp_path / 'st.yml', opt)
    killed = run([TRAIN_PY, '-opt', opt_file], tmp_path, {'REALSR_TEST_KILL_AFTER_ITER': '2'})
    assert killed.returncode == -9, killed.stderr[-2000:]
    models = tmp_path / 'experiments' / 'st' / 'models'
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.safetensors']
    resumed = run([TRAIN_PY, '-opt', opt_file, '--auto_resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r'Resuming training from epoch: \d+, iter: 2', resumed.stderr)
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.safetensors', 'net_g_4.safetensors',
                                                        'net_g_latest.safetensors']
    meta = model_files.read_metadata(str(models / 'net_g_4.safetensors'))
    assert meta['iteration'] == '4' and meta['arch'] == 'MSRResNet'
    assert json.loads(meta['param_keys']) == ['params', 'params_ema']

    test_opt = {
        'name': 'st_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0,
        'datasets': {'test_1': {'name': 'val', 'type': 'PairedImageDataset', 'dataroot_gt': folders['val_gt'],
                                'dataroot_lq': folders['val_lq'], 'io_backend': {'type': 'disk'}}},
        'network_g': {'type': 'auto'},  # the arch comes from the safetensors metadata
        'path': {'pretrain_network_g': str(models / 'net_g_latest.safetensors'), 'param_key_g': 'params_ema'},
        'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
    }
    tested = run([TEST_PY, '-opt', write_yaml(tmp_path / 'test.yml', test_opt)], tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert 'net_g_latest.safetensors' in tested.stderr


def test_network_type_auto_reads_the_arch_of_the_pretrain_file(tmp_path):
    from realsr.utils.option_error import OptionError as BaseOptionError
    swinir = {'type': 'SwinIR', 'upscale': 2, 'img_size': 16, 'window_size': 4, 'embed_dim': 12, 'depths': [2],
              'num_heads': [2], 'upsampler': 'pixelshuffle'}
    torch.manual_seed(0)
    checkpoint.save_network(build_network(dict(swinir)), str(tmp_path / 'swinir.pth'), 'params')
    opt = {'network_g': {'type': 'auto', 'img_range': 255.0},  # what shapes cannot tell stays the user's
           'path': {'pretrain_network_g': str(tmp_path / 'swinir.pth')}}
    model_files.resolve_auto_networks(opt)
    assert opt['network_g']['type'] == 'SwinIR' and opt['network_g']['img_range'] == 255.0
    assert opt['network_g']['depths'] == [2] and opt['network_g']['window_size'] == 4

    with pytest.raises(BaseOptionError, match=r"'network_g.type: auto' reads the arch from 'path.pretrain_network_g'"):
        model_files.resolve_auto_networks({'network_g': {'type': 'auto'}, 'path': {}})
    torch.save({'params': {'mystery.weight': torch.zeros(2)}}, tmp_path / 'odd.pth')
    with pytest.raises(BaseOptionError, match=r"(?s)'network_g.type: auto': could not detect .*odd.pth.*RRDBNet"):
        model_files.resolve_auto_networks({'network_g': {'type': 'auto'},
                                           'path': {'pretrain_network_g': str(tmp_path / 'odd.pth')}})


def test_tied_weights_and_views_are_saved_as_separate_tensors(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
            self.b.weight = self.a.weight  # one parameter under two names
            self.register_buffer('whole', torch.arange(10.))
            self.register_buffer('part', self.whole[2:5])  # a view into another buffer

    path = tmp_path / 'tied.safetensors'
    checkpoint.save_network(Tied(), str(path), 'params')  # safetensors refuses shared memory: copies are made
    sd = model_files.load_network_dict(str(path))['params']
    assert torch.equal(sd['a.weight'], sd['b.weight']) and sd['part'].tolist() == [2., 3., 4.]
