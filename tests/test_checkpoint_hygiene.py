"""Checkpoint recovery and hygiene: what a killed save, a corrupt newest checkpoint, a full disk, a
state from another run or a failing cleanup leave behind, and what the next start makes of it."""
import errno
import hashlib
import logging
import multiprocessing
import os
import random
import signal
import time

import pytest
import torch

from conftest import write_pair_folders
from test_train_e2e import train_options, write_yaml
from realsr.models.base_model import optimizer_mismatch
from realsr.runtime import checkpoint


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def text(self):
        return '\n'.join(self.lines)


@pytest.fixture()
def realsr_log():
    """What the ``realsr`` logger says during the test (it does not propagate to pytest's capture)."""
    logger = logging.getLogger('realsr')
    handler, level = _Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- atomic_save: a full disk, a failing cleanup, the directory fsync --------------------------------
def _fill_then_fail(error, calls):
    def broken_save(obj, f):
        calls.append(1)
        f.write(b'partial bytes')
        raise error
    return broken_save


def test_disk_full_names_the_path_and_is_not_retried(tmp_path, monkeypatch):
    path = tmp_path / 'models' / 'net_g_2.pth'
    checkpoint.atomic_save({'params': {'w': torch.ones(2)}}, path)
    calls = []
    monkeypatch.setattr(torch, 'save', _fill_then_fail(OSError(errno.ENOSPC, 'No space left on device'), calls))
    with pytest.raises(checkpoint.DiskFullError, match=f'no space left on device: {path}') as exc:
        checkpoint.atomic_save({'params': {'w': torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert exc.value.errno == errno.ENOSPC and len(calls) == 1, 'a full disk must not be retried'
    assert os.listdir(path.parent) == ['net_g_2.pth']  # no temporary file left
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(2))  # old file intact


def test_torch_write_failure_on_a_full_disk_is_disk_full(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError without errno: the free space decides."""
    path = tmp_path / 'x.state'
    calls = []
    monkeypatch.setattr(torch, 'save', _fill_then_fail(RuntimeError('[enforce fail] unexpected pos 64 vs 0'), calls))
    monkeypatch.setattr(checkpoint, '_free_bytes', lambda folder: 4096)
    with pytest.raises(checkpoint.DiskFullError, match='no space left on device'):
        checkpoint.atomic_save({'a': 1}, path)
    assert len(calls) == 1
    # the same error with plenty of space is an ordinary failure: retried, then raised as it is
    monkeypatch.setattr(checkpoint, '_free_bytes', lambda folder: 10 << 30)
    monkeypatch.setattr(checkpoint.time, 'sleep', lambda s: None)
    with pytest.raises(RuntimeError, match='unexpected pos'):
        checkpoint.atomic_save({'a': 1}, path, retries=2)
    assert len(calls) == 3
    assert os.listdir(tmp_path) == []


@pytest.fixture()
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs, where the machine allows mounting one (root with CAP_SYS_ADMIN)."""
    import subprocess
    mount = tmp_path / 'full'
    mount.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mount)], capture_output=True).returncode:
        pytest.skip('mounting a tmpfs needs root with CAP_SYS_ADMIN; the simulated disk-full tests cover the logic')
    yield mount
    subprocess.run(['umount', str(mount)], capture_output=True)


def test_a_really_full_disk(tiny_tmpfs, monkeypatch):
    """torch.save on a full tmpfs fails with "unexpected pos" (no errno): still a DiskFullError, at once."""
    path = tiny_tmpfs / 'training_states' / '4.state'
    retries = []
    monkeypatch.setattr(checkpoint.time, 'sleep', retries.append)
    with pytest.raises(checkpoint.DiskFullError, match=f'no space left on device: {path}'):
        checkpoint.atomic_save({'w': torch.zeros(200_000)}, path)  # 800 KB into 256 KiB
    assert retries == [] and os.listdir(path.parent) == []


@pytest.mark.parametrize('failing', ['write', 'rename'])
def test_cleanup_error_does_not_mask_the_original(tmp_path, monkeypatch, realsr_log, failing):
    path = tmp_path / 'x.state'
    if failing == 'write':
        monkeypatch.setattr(torch, 'save', _fill_then_fail(OSError('original write error'), []))
    else:
        def broken_replace(src, dst):
            raise OSError('original rename error')
        monkeypatch.setattr(checkpoint.os, 'replace', broken_replace)

    def broken_remove(p):
        raise PermissionError('cleanup error')

    monkeypatch.setattr(checkpoint.os, 'remove', broken_remove)
    with pytest.raises(OSError, match=f'original {failing} error') as exc:
        checkpoint.atomic_save({'a': 1}, path, retries=1)
    assert 'cleanup error' not in str(exc.value)
    assert 'cleanup error' in realsr_log.text()  # the cleanup failure is logged, not lost


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events, opened = [], {}
    real_open, real_replace, real_fsync = os.open, os.replace, os.fsync

    def spy_open(p, flags, *args):
        fd = real_open(p, flags, *args)
        opened[fd] = os.fspath(p)
        return fd

    monkeypatch.setattr(checkpoint.os, 'open', spy_open)
    monkeypatch.setattr(checkpoint.os, 'replace', lambda a, b: (events.append('replace'), real_replace(a, b)))
    monkeypatch.setattr(checkpoint.os, 'fsync', lambda fd: (events.append(opened.get(fd, 'file')), real_fsync(fd)))
    checkpoint.atomic_save({'a': 1}, tmp_path / 'x.state')
    assert events == ['file', 'replace', str(tmp_path)]


def test_only_our_stale_temp_files_are_removed(tmp_path, realsr_log):
    models, states = tmp_path / 'models', tmp_path / 'training_states'
    models.mkdir()
    states.mkdir()
    ours = [models / '.net_g_4.pth.tmp-12345', states / '.4.state.tmp-999', states / '.4.rank1.state.tmp-7']
    others = [models / 'net_g_4.pth', models / 'notes.tmp-1', models / '.hidden', states / '.4.state.tmp-abc',
              states / '4.state.tmp-12']
    for p in ours + others:
        p.write_bytes(b'x')
    removed = checkpoint.remove_stale_temp_files([str(models), str(states), str(tmp_path / 'absent')])
    assert sorted(removed) == sorted(str(p) for p in ours)
    assert all(p.exists() for p in others) and not any(p.exists() for p in ours)
    assert 'Removed 3 temporary file(s)' in realsr_log.text() and '.net_g_4.pth.tmp-12345' in realsr_log.text()
    assert checkpoint.temp_path(str(models / 'net_g_4.pth')).endswith(f'.net_g_4.pth.tmp-{os.getpid()}')


def test_state_of_another_network_type_is_refused_naming_both(tmp_path):
    from realsr.engine.resume import check_state_fits
    opt = {'path': {}, 'network_g': {'type': 'SwinIR', 'embed_dim': 60}}
    state = {'networks': {'network_g': {'type': 'MSRResNet', 'num_feat': 8}}}
    with pytest.raises(checkpoint.ResumeError, match='network_g.type: MSRResNet in the state, SwinIR in the option'):
        check_state_fits(state, opt, 'x.state')
    same_type = {'path': {}, 'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'use_checkpoint': True}}
    assert check_state_fits(state, same_type, 'x.state') == [  # named in a warning; shapes are checked later
        "network_g.use_checkpoint: None in the state, True in the option file"]
    assert check_state_fits(state, dict(opt, path={'ignore_resume_networks': ['network_g']}), 'x.state') == []


def test_optimizer_state_of_other_shapes_is_named():
    small, big = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 8, 3)
    saved = torch.optim.Adam(small.parameters())
    small(torch.ones(1, 3, 5, 5)).sum().backward()
    saved.step()
    current = torch.optim.Adam(big.parameters())
    names = {id(p): f'net_g.{n}' for n, p in big.named_parameters()}
    problem = optimizer_mismatch(current, saved.state_dict(), names)
    assert 'net_g.weight' in problem and '(4, 3, 3, 3)' in problem and '(8, 3, 3, 3)' in problem
    assert optimizer_mismatch(saved, saved.state_dict()) is None
    fewer = torch.optim.Adam([big.weight])
    assert '2 parameters in the state, 1 in the model' in optimizer_mismatch(fewer, saved.state_dict())


# -- the trainer's start: fallback, refusal, best metric, nothing rewritten ----------------------------
def _options(folders, name, **overrides):
    opt = train_options(folders, name, **{'datasets.train.num_worker_per_gpu': 0, 'train.total_iter': 4,
                                          'logger.save_checkpoint_freq': 2, 'logger.print_freq': 2, **overrides})
    return opt


def _train(tmp_path, monkeypatch, opt, *extra):
    from realsr import train
    monkeypatch.chdir(tmp_path)
    return train.main(['-opt', write_yaml(tmp_path / f"{opt['name']}.yml", opt), *extra])


def _without_val(opt):
    del opt['datasets']['val'], opt['val']
    return opt


def _tree_digest(*roots):
    digest = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                p = os.path.join(folder, name)
                with open(p, 'rb') as f:
                    digest[p] = hashlib.sha256(f.read()).hexdigest()
            digest[folder] = 'dir'
    return digest


@pytest.mark.parametrize('corrupt', ['state', 'network'])
def test_auto_resume_falls_back_past_an_unreadable_newest_checkpoint(tmp_path, monkeypatch, capsys, corrupt):
    folders = write_pair_folders(tmp_path / 'data', n_train=6)
    _train(tmp_path, monkeypatch, _without_val(_options(folders, 'fb')))
    exp = tmp_path / 'experiments' / 'fb'
    bad = exp / 'training_states' / '4.state' if corrupt == 'state' else exp / 'models' / 'net_g_4.pth'
    bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])  # truncated, as by a full disk or a copy
    capsys.readouterr()
    _train(tmp_path, monkeypatch, _without_val(_options(folders, 'fb', **{'train.total_iter': 6})), '--auto_resume')
    err = capsys.readouterr().err
    assert 'skipping the checkpoint of iteration 4' in err and str(bad) in err
    assert 'Resuming training from epoch: 0, iter: 2' in err
    assert (exp / 'models' / 'net_g_6.pth').is_file()
    # what was logged before the resume was checked (the log file did not exist yet) is in the log file
    newest_log = max(exp.glob('train_fb_*.log'), key=os.path.getmtime).read_text()
    assert 'skipping the checkpoint of iteration 4' in newest_log and 'Network: MSRResNet' in newest_log
    assert torch.load(exp / 'training_states' / '4.state', weights_only=True)['iter'] == 4  # rewritten whole


@pytest.mark.slow  # three short trainings with validation
def test_best_metric_record_survives_a_resume_when_save_and_val_coincide(tmp_path, monkeypatch):
    folders = write_pair_folders(tmp_path / 'data', n_train=6)
    every_2 = {'val.val_freq': 2, 'val.save_img': False, 'val.compare_bicubic': False}
    _train(tmp_path, monkeypatch, _options(folders, 'full', **every_2))
    _train(tmp_path, monkeypatch, _options(folders, 'cut', **every_2, **{'train.total_iter': 2}))
    states = tmp_path / 'experiments' / 'cut' / 'training_states'
    record = torch.load(states / '2.state', weights_only=True)['best_metric_results']
    assert record['synthetic_val']['psnr']['iter'] == 2  # the validation of the saved iteration is in it
    _train(tmp_path, monkeypatch, _options(folders, 'cut', **every_2), '--auto_resume')
    full = torch.load(tmp_path / 'experiments' / 'full' / 'training_states' / '4.state', weights_only=True)
    resumed = torch.load(states / '4.state', weights_only=True)
    assert resumed['best_metric_results'] == full['best_metric_results']


def test_state_of_another_arch_is_refused_and_rewrites_nothing(tmp_path, monkeypatch, capsys):
    folders = write_pair_folders(tmp_path / 'data', n_train=6)
    _train(tmp_path, monkeypatch, _without_val(_options(folders, 'arch', **{'train.total_iter': 2})))
    roots = (tmp_path / 'experiments', tmp_path / 'tb_logger')
    before = _tree_digest(*roots)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        _train(tmp_path, monkeypatch, _without_val(_options(folders, 'arch', **{'network_g.num_feat': 16})),
               '--auto_resume')
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert 'network_g.num_feat: 8 in the state, 16 in the option file' in err and '2.state' in err
    assert 'cannot resume' in err and 'file (8, 3, 3, 3) vs network (16, 3, 3, 3)' in err
    assert 'Resuming' not in err and 'Start training' not in err
    assert _tree_digest(*roots) == before  # no option-file copy, log file, tensorboard or archive


# -- a kill-during-save loop -------------------------------------------------------------------------
def _save_forever(models, states, start):
    """A run that only checkpoints, through the real save functions, as fast as it can."""
    torch.set_num_threads(1)
    net = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3) for _ in range(8)])  # ~75 KiB of weights
    pool = torch.rand(64, 3, 32, 32)  # ~0.8 MiB, like a training-pair pool
    it = start
    while True:
        it += 1
        checkpoint.save_network(net, os.path.join(models, f'net_g_{it}.pth'), 'params')
        checkpoint.write_training_state(states, it, {'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': []},
                                        {'pair_pool': {'pool': pool + it}})


@pytest.mark.slow
def test_kills_during_saves_leave_nothing_corrupt(tmp_path):
    """25 SIGKILLs at random moments of a process that does nothing but save checkpoints (through the
    real save_network / write_training_state / atomic_save); after each kill the next start (the
    trainer's stale-file cleanup and auto-resume discovery) finds a readable pair and resumes from
    it. On the 2-core CI machine about 11 of the 25 kills land inside a write (a temp file left)."""
    models, states = str(tmp_path / 'models'), str(tmp_path / 'training_states')
    os.makedirs(models)
    os.makedirs(states)
    ctx = multiprocessing.get_context('fork')  # one interpreter start for the whole loop
    rng = random.Random(0)
    start, kills, temp_files_seen, resumes = 0, 25, 0, []
    for _ in range(kills):
        child = ctx.Process(target=_save_forever, args=(models, states, start), daemon=True)
        child.start()
        time.sleep(rng.uniform(0.05, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        temp_files_seen += sum('.tmp-' in name for folder in (models, states) for name in os.listdir(folder))
        checkpoint.remove_stale_temp_files([models, states])  # what the trainer does at start
        path, state, skipped = checkpoint.find_resumable_state(states, models)
        assert not skipped, skipped  # a kill never leaves a corrupt or incomplete newest pair
        if path is None:  # killed before its first complete save (a slow start)
            assert not [name for name in os.listdir(states) if name.endswith('.state')]
            continue
        assert path.endswith(f"{state['iter']}.state") and state['pair_pool']['pool'].shape == (64, 3, 32, 32)
        resumes.append(state['iter'])
        start = state['iter']
    assert temp_files_seen > 0, 'no kill landed inside a save: the loop did not test what it should'
    assert sorted(resumes) == resumes and len(set(resumes)) > 5
    leftovers = [name for folder in (models, states) for name in os.listdir(folder) if '.tmp-' in name]
    assert leftovers == []
    for folder in (models, states):  # every file on disk loads
        for name in os.listdir(folder):
            torch.load(os.path.join(folder, name), weights_only=True)
