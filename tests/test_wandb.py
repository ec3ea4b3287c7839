"""logger.wandb: an offline run holds the scalars tensorboard gets and the validation images;
``project: ~`` does nothing; ``resume_id`` is the run's id; wandb missing is an option error."""
import glob
import json
import os
import sys

import pytest

from realsr.option_schema import OptionError, validate_options
from realsr.runtime import wandb_logger
from test_train_e2e import set_dotted, train_options, write_yaml


def _train(tmp_path, monkeypatch, pair_folders, wandb_opt, name='wb'):
    """A 4-iteration run (log at 2 and 4, validation at 4) from ``tmp_path``, wandb offline in ``tmp_path/wb``."""
    from realsr import train
    opt = train_options(pair_folders, name, **{'train.total_iter': 4, 'logger.print_freq': 2, 'val.val_freq': 4,
                                               'logger.save_checkpoint_freq': 4, 'datasets.train.num_worker_per_gpu': 0,
                                               'logger.use_tb_logger': False})
    set_dotted(opt, {'logger.wandb': wandb_opt})
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_DIR', str(tmp_path / 'wb'))
    monkeypatch.setenv('WANDB_SILENT', 'true')
    (tmp_path / 'wb').mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)
    train.main(['-opt', write_yaml(tmp_path / f'{name}.yml', opt)])
    if 'wandb' in sys.modules:  # wandb keeps its settings (WANDB_DIR) per process until torn down
        sys.modules['wandb'].teardown()


def _offline_run_dir(tmp_path):
    runs = glob.glob(str(tmp_path / 'wb' / 'wandb' / 'offline-run-*'))
    assert len(runs) == 1, runs
    return runs[0]


def _records(path):
    """The records of a .wandb file: a 7-byte header (':W&B', 0xBEE1, version), then LevelDB-log
    blocks of 32 KiB holding chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
    wandb 0.31 ships no Python reader of its own, so the test reads the documented layout."""
    import struct
    with open(path, 'rb') as f:
        data = f.read()
    assert data[:4] == b':W&B', data[:7]
    pos, block, pending = 7, 32768, b''
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            pos += block - pos % block if pos % block else 0
        elif kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def _history(run_dir):
    """``{step: {key: value}}`` of the run's logged rows, from its .wandb file."""
    from wandb.proto import wandb_internal_pb2
    rows = {}
    for data in _records(glob.glob(os.path.join(run_dir, '*.wandb'))[0]):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof('record_type') == 'history':
            row = {item.key or '/'.join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows[row['_step']] = row
    return rows


@pytest.mark.slow
def test_offline_run_holds_the_scalars_and_images(tmp_path, monkeypatch, pair_folders):
    _train(tmp_path, monkeypatch, pair_folders, {'project': 'realsr-test', 'resume_id': None})
    run_dir = _offline_run_dir(tmp_path)
    rows = _history(run_dir)
    assert {2, 4} <= set(rows), rows.keys()
    for step in (2, 4):  # what tensorboard gets at print_freq: the losses under losses/, the lr
        assert rows[step]['losses/l_pix'] > 0 and rows[step]['lr'] > 0
    assert rows[4]['metrics/synthetic_val/psnr'] > 10  # validation at val_freq, same step
    images = {key.rsplit('/', 1)[0]: value for key, value in rows[4].items()
              if key.startswith('val_images/') and key.endswith('/_type')}
    assert images == {'val_images/img00': 'image-file', 'val_images/img01': 'image-file'}, rows[4].keys()
    assert len(glob.glob(os.path.join(run_dir, 'files', 'media', 'images', 'val_images', '*.png'))) == 2


@pytest.mark.slow
def test_resume_id_is_the_run_id(tmp_path, monkeypatch, pair_folders):
    _train(tmp_path, monkeypatch, pair_folders, {'project': 'realsr-test', 'resume_id': 'abc123xyz'})
    assert _offline_run_dir(tmp_path).endswith('-abc123xyz')


def test_project_none_does_nothing(tmp_path, monkeypatch, pair_folders):
    """BasicSR's own files say ``project: ~``: no wandb import, no wandb folder, no message."""
    already = 'wandb' in sys.modules
    _train(tmp_path, monkeypatch, pair_folders, {'project': None, 'resume_id': None})
    assert not glob.glob(str(tmp_path / '**' / 'wandb'), recursive=True)
    assert already or 'wandb' not in sys.modules


def test_no_run_on_other_ranks_or_in_debug_runs(monkeypatch):
    opt = {'name': 'x', 'logger': {'wandb': {'project': 'p'}}}
    monkeypatch.setattr('realsr.runtime.dist.get_dist_info', lambda: (1, 2))
    assert wandb_logger.init_wandb_logger(opt) is None
    monkeypatch.setattr('realsr.runtime.dist.get_dist_info', lambda: (0, 1))
    assert wandb_logger.init_wandb_logger({**opt, 'name': 'debug_x'}) is None
    assert wandb_logger.init_wandb_logger({'name': 'x', 'logger': {'wandb': {'project': None}}}) is None


def test_project_without_wandb_installed_is_an_option_error(monkeypatch, pair_folders):
    real_find_spec = wandb_logger.importlib.util.find_spec
    monkeypatch.setattr(wandb_logger.importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'wandb' else real_find_spec(name, *a))
    opt = train_options(pair_folders, 'x')
    opt['logger']['wandb'] = {'project': 'p'}
    with pytest.raises(OptionError) as err:
        validate_options(opt, is_train=True)
    assert "'logger.wandb.project'" in str(err.value) and "pip install 'realsr[wandb]'" in str(err.value)
    opt['logger']['wandb'] = {'project': None}
    validate_options(opt, is_train=True)  # project: ~ needs no wandb
