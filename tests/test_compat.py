"""realsr.compat: each name-based switch of other projects' files logs when it acts, and only then;
the backend picked for torch.distributed follows dist_params.backend for every launcher."""
import logging

import pytest

from realsr import compat


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture()
def realsr_log():
    """The messages of the 'realsr' logger (a handler of its own: the logger may not propagate)."""
    logger = logging.getLogger('realsr')
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def _opt(name, train_name='DIV2K', **extra):
    opt = {'name': name, 'datasets': {'train': {'name': train_name}, 'val': {'name': 'Set5'}},
           'val': {'val_freq': 5000}, 'logger': {'print_freq': 100, 'save_checkpoint_freq': 5000}}
    opt.update(extra)
    return opt


def test_debug_switch_sets_basicsr_frequencies_and_logs(realsr_log):
    opt = _opt('debug_my_run')
    assert compat.apply_debug_settings(opt) is True
    assert opt['val']['val_freq'] == 8 and opt['logger'] == {'print_freq': 1, 'save_checkpoint_freq': 8}
    assert compat.is_debug_run(opt)
    assert len(realsr_log) == 1 and "'debug'" in realsr_log[0] and 'debug_my_run' in realsr_log[0]
    assert 'tensorboard' in realsr_log[0] and 'wandb' in realsr_log[0]


def test_debug_switch_silent_without_debug_in_name(realsr_log):
    opt = _opt('my_run')
    assert compat.apply_debug_settings(opt) is False
    assert opt['val']['val_freq'] == 5000 and opt['logger']['print_freq'] == 100
    assert not compat.is_debug_run(opt) and realsr_log == []


def test_debug_switch_without_logger_or_val_section(realsr_log):
    opt = {'name': 'x_debug'}
    assert compat.apply_debug_settings(opt) and opt['logger']['print_freq'] == 1 and 'val' not in opt


@pytest.mark.parametrize('name, train_name, weight, expected', [
    ('train_RealSRResNetx4-reg', 'DIV2K_reg', '1e0', 1.0),  # the paper's file: weight is a string to PyYAML
    ('a_reg', 'b_reg', None, 1.0),  # weight defaults to 1
    ('run-reg', 'DIV2K', 3.0, None),  # 'reg' in one name only: no switch
    ('run', 'DIV2K_reg', 3.0, None),
])
def test_simple_align_switch_logs_only_when_it_acts(realsr_log, name, train_name, weight, expected):
    extra = {} if weight is None else {'weight': weight}
    regs = compat.simple_align_regularizers(_opt(name, train_name, **extra))
    if expected is None:
        assert regs == [] and realsr_log == []
    else:
        assert regs == [{'type': 'FeatureAlignment', 'weight': expected}]
        assert len(realsr_log) == 1 and 'turned on FeatureAlignment' in realsr_log[0]


def test_simple_align_switch_not_doubled_and_says_so(realsr_log):
    opt = _opt('x_reg', 'DIV2K_reg', weight=5, regularizers=[{'type': 'FeatureAlignment', 'weight': 2}])
    assert compat.simple_align_regularizers(opt) == []
    assert len(realsr_log) == 1 and 'not used' in realsr_log[0]


def test_message_logger_writes_no_tensorboard_scalars_in_debug_runs():
    from realsr.runtime.logger import MessageLogger

    class Board:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append(tag)

    for name, expect_losses in (('debug_x', False), ('x', True)):
        board = Board()
        opt = {'name': name, 'logger': {'print_freq': 1, 'use_tb_logger': True}, 'train': {'total_iter': 10}}
        MessageLogger(opt, tb_logger=board)({'epoch': 0, 'iter': 1, 'lrs': [1e-4], 'l_pix': 0.5})
        assert ('losses/l_pix' in board.scalars) == expect_losses, name


# -- dist_params.backend -----------------------------------------------------------------------------
def test_backend_defaults_follow_the_device():
    from realsr.runtime.dist import resolve_backend
    assert resolve_backend(None, use_cuda=True) == 'nccl'
    assert resolve_backend(None, use_cuda=False) == 'gloo'
    assert resolve_backend('gloo', use_cuda=True) == 'gloo'
    assert resolve_backend('GLOO', use_cuda=False) == 'gloo'


@pytest.mark.parametrize('backend, use_cuda', [('nccl', False), ('ncl', True), ('nccl ', False)])
def test_backend_that_cannot_work_names_the_key(backend, use_cuda):
    from realsr.runtime.dist import resolve_backend
    with pytest.raises(ValueError, match=r'dist_params\.backend') as err:
        resolve_backend(backend, use_cuda)
    assert repr(backend) in str(err.value) and ('gloo' in str(err.value))


@pytest.mark.parametrize('launcher', ['pytorch', 'slurm'])
@pytest.mark.parametrize('backend, expected', [(None, 'gloo'), ('gloo', 'gloo'), ('nccl', None)])
def test_parse_options_honours_the_backend_for_every_launcher(tmp_path, monkeypatch, pair_folders, launcher, backend,
                                                              expected):
    """dist_params.backend reaches init_dist with torchrun too (it used to for slurm only); nccl on a
    CPU run is an option error naming the key."""
    import torch

    import realsr.runtime.dist as dist_mod
    from realsr.option_schema import OptionError
    from realsr.options import parse_options
    from test_train_e2e import train_options, write_yaml

    seen = {}

    def fake_init_dist(launcher, backend=None, **kwargs):
        seen['backend'] = backend
        return torch.device('cpu')

    monkeypatch.setattr(dist_mod, 'init_dist', fake_init_dist)
    opt = train_options(pair_folders, 'backend', num_gpu=0)
    if backend is not None:
        opt['dist_params'] = {'backend': backend}
    argv = ['-opt', write_yaml(tmp_path / 'o.yml', opt), '--launcher', launcher]
    if expected is None:
        with pytest.raises(OptionError, match=r"dist_params\.backend: 'nccl' cannot work on a CPU"):
            parse_options(str(tmp_path), argv=argv)
        assert seen == {}
    else:
        parse_options(str(tmp_path), argv=argv)
        assert seen == {'backend': expected}
