"""The shared training step (:mod:`realsr.runtime.train_step`) on the CPU: bf16 autocast,
channels_last, torch.compile, the fp16 grad scaler's state, precision fallbacks, the non-finite
guard (single process and DDP), gradient clipping, accumulation (with DDP's ``no_sync``), the
first log line's speed and the absence of host reads in the hot step.

Unit tests build an ``SRModel`` with a tiny MSRResNet in-process and drive ``feed_data`` /
``optimize_parameters`` by hand; the end-to-end ones go through ``realsr/train.py`` in a
subprocess like tests/test_train_e2e.py.
"""
import contextlib
import copy
import logging
import math
import os
import re
import signal

import pytest
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from conftest import REPO_ROOT, write_pair_folders
from test_train_e2e import TRAIN_PY, assert_same_weights, load, run, set_dotted, train_options, write_yaml

from realsr.runtime import checkpoint
from realsr.runtime import train_step as train_step_module
from realsr.runtime.step_options import read_step_options
from realsr.runtime.train_step import NonFiniteError, Precision, resolve_precision
from realsr.models.sr_model import SRModel
from realsr.option_schema import OptionError, validate_options
from realsr.registry import ARCH_REGISTRY

LR = 1e-3
ADAM = {'type': 'Adam', 'lr': LR, 'betas': [0.9, 0.99]}


# -- helpers -----------------------------------------------------------------------------------
def sr_opt(tmp_path, train=None, **top):
    """A training SRModel option dict: MSRResNet with 8 features and 1 block (x4), L1, EMA 0.9."""
    opt = {
        'name': 'unit', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4},
        'path': {'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'training_states')},
        'datasets': {'train': {'batch_size_per_gpu': 2}},
        'train': {'ema_decay': 0.9, 'optim_g': dict(ADAM), 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
    }
    opt['train'].update(train or {})
    return set_dotted(opt, top)


def make_model(tmp_path, train=None, seed=0, **top):
    torch.manual_seed(seed)  # same seed -> same initial weights
    return SRModel(sr_opt(tmp_path, train, **top))


def batch(seed, b=2, lq_size=8):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 3, 4 * lq_size, 4 * lq_size, generator=g)
    return {'lq': F.avg_pool2d(gt, 4), 'gt': gt}


def nan_batch(seed, b=2):
    data = batch(seed, b)
    data['lq'][0, 1, 2, 3] = float('nan')
    return data


def train_on(model, data, current_iter):
    model.feed_data(data)
    model.optimize_parameters(current_iter)


def flat_params(net):
    return torch.cat([p.detach().flatten().clone() for p in checkpoint.unwrap(net).parameters()])


def snapshot(model):
    """Weights, EMA weights and optimizer state, cloned."""
    return {'net': copy.deepcopy(checkpoint.unwrap(model.net_g).state_dict()),
            'ema': copy.deepcopy(model.net_g_ema.state_dict()) if model.net_g_ema is not None else {},
            'optim': copy.deepcopy(model.optimizer_g.state_dict())}


def assert_same_snapshot(a, b):
    for key in ('net', 'ema'):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f'{key}/{name} changed'
    assert a['optim']['state'].keys() == b['optim']['state'].keys()
    for idx, state in a['optim']['state'].items():
        for name, value in state.items():  # step, exp_avg, exp_avg_sq
            assert torch.equal(value, b['optim']['state'][idx][name]), f'optimizer state {idx}/{name} changed'


def record_step_grads(model):
    """Wrap the optimizer's step: each call records the gradients it is about to apply."""
    grads = []
    optimizer = model.optimizer_g
    plain_step = optimizer.step

    def step(*args, **kwargs):
        grads.append(torch.cat([p.grad.detach().flatten().clone() for group in optimizer.param_groups
                                for p in group['params']]))
        return plain_step(*args, **kwargs)

    optimizer.step = step
    return grads


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One intra-op thread, as the subprocess runs have (OMP_NUM_THREADS=1): the nets are tiny, and
    two OpenMP threads on a busy 2-core machine wait for each other (a step measured 15x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def force_bf16(monkeypatch):
    """bf16 even on a CPU without bf16 units (where the run would fall back to fp32): these tests
    are about what bf16 computes, not about how fast."""
    monkeypatch.setattr(train_step_module, 'bf16_is_fast', lambda device_type: True)


@pytest.fixture()
def realsr_log(caplog):
    """caplog for the 'realsr' logger, which stops propagation once a run has set it up."""
    logger = logging.getLogger('realsr')
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the handler sits on this logger: each record once
    caplog.clear()
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- 1. bf16 -----------------------------------------------------------------------------------
def test_bf16_step_stays_close_to_fp32(tmp_path, force_bf16):
    """A bf16 step stays close to an fp32 step from the same weights.

    Tolerances: bf16 keeps 8 significant bits, a relative rounding of 2^-8 ~ 4e-3 per value.
    - The loss: the output is rounded about once relative to fp32 (and the loss is taken in fp32),
      so the L1 loss is within one bf16 ulp, 4e-3 relative.
    - The first step's gradients (same weights, same batch): the ~7 convolutions round their inputs
      and outputs in the forward and again in the backward; the errors add at most linearly,
      ~14 x 2^-9 (round to nearest) ~ 3e-2 of the gradient's norm (measured: ~1e-2).
    - The weights after 2 Adam steps: Adam's update is lr * m/sqrt(v), at most 1.0011 lr per
      element per step for betas (0.9, 0.99) and t <= 2 (Cauchy-Schwarz on the bias-corrected
      averages), so two runs are at most 2 x (1 + 1.0011) lr apart anywhere. Adam's first steps are
      ~lr * sign(g), so the two runs disagree only where bf16 flips the sign of a gradient
      component smaller than its ~1e-2 error: a few per cent of them (measured 2-4 %). Hence the
      mean difference <= 0.2 lr (10 % flipped, each 2 lr; measured <= 0.09 lr) and the cosine of the
      two updates >= 0.95 (cos = 1 - 2 x flipped fraction for +-lr updates; measured >= 0.98).
    """
    fp32, bf16 = make_model(tmp_path), make_model(tmp_path, use_amp=True, amp_bf16=True)
    assert fp32.train_step.precision.dtype is None
    assert bf16.train_step.precision.dtype == torch.bfloat16
    start = flat_params(fp32.net_g)
    assert torch.equal(start, flat_params(bf16.net_g))
    g32, g16 = record_step_grads(fp32), record_step_grads(bf16)
    conv, x = torch.nn.Conv2d(3, 3, 3), batch(0)['lq']  # a net whose raw output is bf16 under autocast
    with bf16.train_step.autocast():
        assert conv(x).dtype == torch.bfloat16
    assert bf16.train_step.forward(conv, x).dtype == torch.float32  # losses see fp32 outputs

    for it in (1, 2):
        for model in (fp32, bf16):
            train_on(model, batch(it, b=4), it)
        l32, l16 = float(fp32.log_dict['l_pix']), float(bf16.log_dict['l_pix'])
        assert abs(l16 - l32) <= 4e-3 * l32, (it, l32, l16)
        assert bf16.output.dtype == torch.float32
        if it == 1:
            assert g16[0].dtype == g32[0].dtype == torch.float32  # fp32 master weights and gradients
            rel = float((g16[0] - g32[0]).norm() / g32[0].norm())
            assert 0 < rel <= 3e-2, f'first-step gradient relative error {rel}'

    w32, w16 = flat_params(fp32.net_g), flat_params(bf16.net_g)
    assert not torch.equal(w32, w16), 'the bf16 run computed exactly what fp32 did: was autocast on?'
    diff = (w16 - w32).abs()
    assert float(diff.max()) <= 2 * (1 + 1.0011) * LR * (1 + 1e-4)
    assert float(diff.mean()) <= 0.2 * LR
    cos = float(F.cosine_similarity(w32 - start, w16 - start, dim=0))
    assert cos >= 0.95, cos


# -- 2. channels_last --------------------------------------------------------------------------
def test_channels_last_matches_nchw_and_saves_plain_tensors(tmp_path):
    """channels_last (fp32) computes what NCHW does, and its checkpoints are plain NCHW.

    Tolerances: both are fp32; the convolutions may pick other oneDNN algorithms for the other
    layout, which sum in another order: ~1e-6 relative, so the outputs agree to rtol 1e-5 and the
    first step's gradients to 1e-5 of their norm. Adam's update lr * g / (|g| + eps) changes by at
    most lr * |dg| / eps; with the gradient differences of a reordered sum (|dg| << 1e-10 here) this
    is far below 1e-2 lr per step, so after 3 steps the weights agree to 1e-5 absolute (1 % of lr;
    measured 2e-8).
    """
    nchw = make_model(tmp_path / 'nchw')
    cl = make_model(tmp_path / 'cl', use_channels_last=True)
    assert cl.train_step.precision.channels_last and not nchw.train_step.precision.channels_last
    four_d = [p for p in cl.net_g.parameters() if p.dim() == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)

    lq = batch(7)['lq']
    with torch.no_grad():
        out_nchw, out_cl = nchw.train_step.forward(nchw.net_g, lq), cl.train_step.forward(cl.net_g, lq)
    torch.testing.assert_close(out_cl, out_nchw, rtol=1e-5, atol=1e-6)

    g_nchw, g_cl = record_step_grads(nchw), record_step_grads(cl)
    for it in (1, 2, 3):
        for model in (nchw, cl):
            train_on(model, batch(it), it)
    assert float((g_cl[0] - g_nchw[0]).norm()) <= 1e-5 * float(g_nchw[0].norm())
    torch.testing.assert_close(flat_params(cl.net_g), flat_params(nchw.net_g), rtol=0, atol=1e-5)

    nchw.save(0, 3)
    cl.save(0, 3)
    saved_nchw = load(tmp_path / 'nchw' / 'models' / 'net_g_3.pth')
    saved_cl = load(tmp_path / 'cl' / 'models' / 'net_g_3.pth')
    assert saved_cl.keys() == saved_nchw.keys() == {'params', 'params_ema'}
    live = {'params': cl.net_g.state_dict(), 'params_ema': cl.net_g_ema.state_dict()}
    for key in saved_cl:
        assert list(saved_cl[key]) == list(saved_nchw[key]) == list(live[key])
        for name, tensor in saved_cl[key].items():
            assert tensor.is_contiguous(), f'{key}/{name} saved in channels_last'
            assert torch.equal(tensor, live[key][name])


# -- 3. torch.compile --------------------------------------------------------------------------
def test_compiled_step_matches_eager_and_keeps_checkpoint_keys(tmp_path):
    """torch.compile computes what eager does, and checkpoints carry no ``_orig_mod.`` prefix.

    The smallest MSRResNet (8 features, 1 block) and two steps: compiling the forward and backward
    graphs on a 2-core CPU takes ~25 s (a second run reads inductor's cache). Tolerances as for
    channels_last: inductor fuses the pointwise ops around the same fp32 convolutions, so outputs
    agree to rtol 1e-5 and the weights after two Adam steps to 1e-5 (measured 2e-8).
    """
    from realsr.runtime.compile import compile_problem
    problem = compile_problem(torch.device('cpu'))
    if problem:
        pytest.skip(f'torch.compile cannot run here: {problem}')
    eager = make_model(tmp_path / 'eager')
    compiled = make_model(tmp_path / 'compiled', use_compile=True)
    assert compiled.net_g is not checkpoint.unwrap(compiled.net_g), 'net_g was not wrapped by torch.compile'
    try:
        for it in (1, 2):
            for model in (eager, compiled):
                train_on(model, batch(it), it)
            if it == 1:  # the same weights went in: the training forward agrees
                torch.testing.assert_close(compiled.output, eager.output, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(flat_params(compiled.net_g), flat_params(eager.net_g), rtol=0, atol=1e-5)
        eager.save(0, 2)
        compiled.save(0, 2)
    finally:
        torch._dynamo.reset()
    saved_eager = load(tmp_path / 'eager' / 'models' / 'net_g_2.pth')
    saved_compiled = load(tmp_path / 'compiled' / 'models' / 'net_g_2.pth')
    for key in ('params', 'params_ema'):
        assert list(saved_compiled[key]) == list(saved_eager[key])
        assert not [k for k in saved_compiled[key] if '_orig_mod' in k]
    state = checkpoint.load_training_state(str(tmp_path / 'compiled' / 'training_states' / '2.state'))
    assert len(state['optimizers'][0]['state']) == len(saved_eager['params'])


# -- 4. exact resume with bf16 + channels_last ---------------------------------------------------
FORCED_BF16_TRAIN = f'''import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from realsr.runtime import train_step
train_step.bf16_is_fast = lambda device_type: True  # bf16 even where it is emulated: exactness is tested
from realsr import train
train.main(sys.argv[1:])
'''


@pytest.mark.slow
def test_kill_resume_is_exact_with_bf16_and_channels_last(tmp_path):
    """A bf16 + channels_last run killed after its iteration-2 checkpoint and resumed with
    --auto_resume ends bit-identical to an uninterrupted run (9 images, batch 3: the kill lands
    mid-epoch). bf16 is forced on CPUs without bf16 units (see FORCED_BF16_TRAIN)."""
    folders = write_pair_folders(tmp_path / 'data', n_train=9)
    script = tmp_path / 'train_bf16.py'
    script.write_text(FORCED_BF16_TRAIN)

    def opt_file(name):
        opt = train_options(folders, name, use_amp=True, amp_bf16=True, use_channels_last=True,
                            **{'train.total_iter': 4, 'logger.save_checkpoint_freq': 2, 'logger.use_tb_logger': False,
                               'datasets.train.num_worker_per_gpu': 0})
        del opt['datasets']['val'], opt['val']
        return write_yaml(tmp_path / f'{name}.yml', opt)

    full = run([str(script), '-opt', opt_file('full')], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert 'Training precision: bf16 + channels_last' in full.stderr
    cut = opt_file('cut')
    killed = run([str(script), '-opt', cut], tmp_path, {'REALSR_TEST_KILL_AFTER_ITER': '2'})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'cut'
    assert (exp / 'training_states' / '2.state').is_file() and not (exp / 'models' / 'net_g_4.pth').exists()
    resumed = run([str(script), '-opt', cut, '--auto_resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Resuming training from epoch: 0, iter: 2' in resumed.stderr
    full_models = tmp_path / 'experiments' / 'full' / 'models'
    for name in ('net_g_4.pth', 'net_g_latest.pth'):
        assert_same_weights(load(full_models / name), load(exp / 'models' / name))
    assert not torch.equal(load(full_models / 'net_g_2.pth')['params']['conv_first.weight'],
                           load(full_models / 'net_g_4.pth')['params']['conv_first.weight'])


# -- 5. the fp16 grad scaler's state -----------------------------------------------------------
def test_fp16_grad_scaler_state_is_saved_and_restored(tmp_path, monkeypatch, realsr_log):
    """The fp16 GradScaler's state is in the ``.state`` file and comes back on resume.

    fp16 autocast is refused on a CPU by resolve_precision, but the CPU runs fp16 autocast and its
    GradScaler: the model is built with its precision patched to fp16 so that the real
    build_train_step / add_group / save_training_state / resume_training code runs. A NaN batch
    makes the scaler back off (65536 -> 32768), so the round trip carries a non-default state.
    """
    fp16 = Precision('cpu', torch.float16)
    monkeypatch.setattr('realsr.models.base_model.resolve_precision', lambda settings, device_type, archs: (fp16, []))
    model = make_model(tmp_path)
    scaler = model.train_step.groups['g'].scaler
    assert scaler is not None
    train_on(model, batch(1), 1)
    assert scaler.get_scale() == 65536.0
    before = snapshot(model)
    train_on(model, nan_batch(2), 2)  # inf/NaN gradients: the scaler backs off and the step is skipped
    assert_same_snapshot(before, snapshot(model))
    assert scaler.get_scale() == 32768.0
    train_on(model, batch(3), 3)
    assert not torch.equal(before['net']['conv_first.weight'], model.net_g.state_dict()['conv_first.weight'])
    model.save(0, 3)

    state = checkpoint.load_training_state(str(tmp_path / 'training_states' / '3.state'))
    saved = state['train_step']['g']['scaler']
    assert saved['scale'] == 32768.0 and saved['_growth_tracker'] == 1
    assert saved == scaler.state_dict()

    resumed = make_model(tmp_path, seed=1)
    assert resumed.train_step.groups['g'].scaler.get_scale() == 65536.0
    resumed.resume_training(state)
    assert resumed.train_step.groups['g'].scaler.state_dict() == saved
    assert not warnings_of(realsr_log)

    # a state without a scaler (an fp32 or BasicSR run) starts the scaler afresh, with a warning
    afresh = make_model(tmp_path, seed=2)
    afresh.train_step.load_state_dict({'g': {'scaler': None, 'consecutive': torch.tensor(0.)}})
    assert any('no fp16 grad scaler' in w for w in warnings_of(realsr_log))


# -- 6. precision fallbacks ----------------------------------------------------------------------
def test_fp16_on_cpu_is_refused_naming_amp_bf16(tmp_path):
    """fp16 autocast does not exist on a CPU: resolve_precision and the model refuse it, naming the
    option that gives the CPU's mixed precision (amp_bf16)."""
    fp16 = read_step_options({'use_amp': True})
    with pytest.raises(ValueError, match='amp_bf16'):
        resolve_precision(fp16, 'cpu')
    with pytest.raises(ValueError, match='amp_bf16'):
        make_model(tmp_path, use_amp=True, amp_bf16=False)
    precision, warnings = resolve_precision(fp16, 'cuda', [ARCH_REGISTRY.get('MSRResNet')])
    assert precision.dtype == torch.float16 and precision.needs_scaler and not warnings


def test_swinir_fp16_falls_back_to_bf16_and_bf16_without_units_to_fp32():
    """SwinIR (attention logits overflow fp16) trains in bf16 when fp16 is asked for, with a
    warning, also on a CPU where fp16 itself is refused; bf16 on a device without bf16 units runs
    in fp32 with a warning."""
    swinir = ARCH_REGISTRY.get('SwinIR')
    fp16 = read_step_options({'use_amp': True, 'use_channels_last': True})
    for device_type in ('cuda', 'cpu'):
        precision, warnings = resolve_precision(fp16, device_type, [swinir], bf16_supported=True)
        assert precision == Precision(device_type, torch.bfloat16, True)
        assert len(warnings) == 1 and 'SwinIR' in warnings[0] and 'bf16' in warnings[0]

    bf16 = read_step_options({'use_amp': True, 'amp_bf16': True})
    precision, warnings = resolve_precision(bf16, 'cpu', bf16_supported=False)
    assert precision.dtype is None and precision.name() == 'fp32'
    assert len(warnings) == 1 and 'fp32' in warnings[0] and 'bf16' in warnings[0]
    precision, warnings = resolve_precision(bf16, 'cpu', bf16_supported=True)
    assert precision.dtype == torch.bfloat16 and not warnings
    precision, warnings = resolve_precision(fp16, 'cuda', [swinir], bf16_supported=False)  # both fallbacks
    assert precision.dtype is None and len(warnings) == 2


# -- 7. the non-finite guard ---------------------------------------------------------------------
def test_nan_batch_is_skipped_bit_for_bit_and_named(tmp_path, realsr_log):
    """A batch with a NaN in its LQ: the step is skipped on the device (fused Adam's found_inf):
    weights, Adam's exp_avg/exp_avg_sq/step and the EMA stay bit for bit; check() names l_pix;
    the next finite batch steps as if the NaN batch had never come (bit-identical to a run
    without it)."""
    model, clean = make_model(tmp_path), make_model(tmp_path)
    assert model.optimizer_g.defaults.get('fused')
    for m in (model, clean):
        train_on(m, batch(1), 1)
    before = snapshot(model)
    train_on(model, nan_batch(2), 2)
    assert_same_snapshot(before, snapshot(model))
    assert not math.isfinite(float(model.log_dict['l_pix']))

    model.train_step.check(2)
    warnings = warnings_of(realsr_log)
    assert len(warnings) == 1 and 'skipped 1 optimizer step' in warnings[0] and 'l_pix' in warnings[0], warnings

    train_on(model, batch(3), 3)
    train_on(clean, batch(3), 2)
    after = snapshot(model)
    assert not torch.equal(after['net']['conv_first.weight'], before['net']['conv_first.weight'])
    assert_same_snapshot(snapshot(clean), after)
    assert int(after['optim']['state'][0]['step']) == 2
    realsr_log.clear()
    model.train_step.check(3)
    assert not warnings_of(realsr_log)


def test_consecutive_skips_raise_nonfinite_error(tmp_path, realsr_log):
    """NonFiniteError once nonfinite_max_skips (3) steps in a row were skipped, a streak that spans
    checks; skips broken by a good step only warn."""
    model = make_model(tmp_path, train={'nonfinite_max_skips': 3})
    for it, data in enumerate([nan_batch(1), nan_batch(2), batch(3), nan_batch(4), nan_batch(5)], start=1):
        train_on(model, data, it)
    model.train_step.check(5)  # 4 skipped, at most 2 in a row
    assert any('skipped 4 optimizer step' in w for w in warnings_of(realsr_log))
    train_on(model, nan_batch(6), 6)  # the third in a row
    with pytest.raises(NonFiniteError, match='3 consecutive') as err:
        model.train_step.check(6)
    assert 'l_pix' in str(err.value) and 'no checkpoint with NaN/Inf' in str(err.value)
    assert all(torch.isfinite(p).all() for p in model.net_g.parameters())


def test_save_network_refuses_nan_and_keeps_previous_file(tmp_path):
    """save_network writes no checkpoint holding a NaN; the file already there stays intact and no
    temporary file is left."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 3, 1))
    path = tmp_path / 'net_g_1.pth'
    checkpoint.save_network(net, str(path), 'params')
    good = path.read_bytes()
    with torch.no_grad():
        net[1].weight[0, 0, 0, 0] = float('nan')
    with pytest.raises(FloatingPointError, match=r'1\.weight'):
        checkpoint.save_network(net, str(path), 'params')
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ['net_g_1.pth']


@pytest.mark.slow
def test_huge_lr_stops_with_status_3_and_writes_only_finite_checkpoints(tmp_path):
    """lr 1e6 with Adam: the first step moves every weight by ~1e6, so the next forward overflows
    fp32 (nine convolutions with ~1e6 weights and ~100 inputs each: ~1e8 per layer) and every
    later loss is NaN; the skipped steps leave the weights as they are, so the streak goes on, and
    with nonfinite_max_skips 2 and print_freq 1 the run stops at iteration 3 with exit status 3 and
    a message; every checkpoint written is finite, and iteration 2's (a skipped step) equals
    iteration 1's."""
    folders = write_pair_folders(tmp_path / 'data', n_train=6)
    opt = train_options(folders, 'huge_lr', **{
        'train.optim_g.lr': 1e6, 'train.warmup_iter': -1, 'train.nonfinite_max_skips': 2, 'train.total_iter': 8,
        'logger.print_freq': 1, 'logger.save_checkpoint_freq': 1, 'logger.use_tb_logger': False,
        'datasets.train.num_worker_per_gpu': 0})
    del opt['datasets']['val'], opt['val']
    proc = run([TRAIN_PY, '-opt', write_yaml(tmp_path / 'huge_lr.yml', opt)], tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    message = [line for line in proc.stderr.splitlines() if line.startswith('realsr: ')]
    assert message and '2 consecutive' in message[0] and 'non-finite' in message[0], proc.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'huge_lr'
    files = sorted(exp.rglob('*.pth')) + sorted(exp.rglob('*.state'))
    assert {p.name for p in files} == {'net_g_1.pth', 'net_g_2.pth', '1.state', '2.state'}

    def tensors(obj):
        if torch.is_tensor(obj):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from tensors(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from tensors(v)

    for path in files:
        state = torch.load(path, map_location='cpu', weights_only=False)
        found = [t for t in tensors(state) if t.is_floating_point()]
        assert found and all(torch.isfinite(t).all() for t in found), path
    first, second = load(exp / 'models' / 'net_g_1.pth'), load(exp / 'models' / 'net_g_2.pth')
    assert_same_weights(first, second)
    assert float(first['params']['conv_first.weight'].abs().max()) > 1e4  # the huge step was taken


DDP_NAN_SCRIPT = f'''import copy, sys, torch
sys.path.insert(0, {str(REPO_ROOT)!r})
sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
from realsr.runtime.dist import init_dist
from realsr.models.sr_model import SRModel
from test_train_step import batch, nan_batch, snapshot, sr_opt
from pathlib import Path

init_dist('pytorch')
rank = torch.distributed.get_rank()
torch.manual_seed(0)
model = SRModel(sr_opt(Path('.'), dist=True))
assert type(model.net_g).__name__ == 'DistributedDataParallel'
states = []
train = lambda data, it: (model.feed_data(data), model.optimize_parameters(it))
train(batch(10 + rank), 1)
states.append(snapshot(model))
train(nan_batch(20) if rank == 1 else batch(20), 2)  # NaN input on rank 1: NaN gradients, averaged to both
states.append(snapshot(model))
inf_gt = batch(30 + rank)
if rank == 1:  # an Inf target: the loss is Inf but its gradient (sign) is finite, so only the flag tells
    inf_gt['gt'][0, 0, 0, 0] = float('inf')
train(inf_gt, 3)
states.append(snapshot(model))
skipped = int(model.train_step.groups['g'].skipped)
train(batch(40 + rank), 4)
states.append(snapshot(model))
torch.save({{'states': states, 'skipped': skipped}}, f'rank{{rank}}.pt')
'''


@pytest.mark.slow
def test_ddp_nan_on_one_rank_skips_the_step_on_both(tmp_path):
    """2 gloo processes (torch.distributed.run, like tests/test_ddp_regularizers.py): rank 1 feeds
    a NaN LQ at iteration 2 and an Inf GT at iteration 3 (finite gradients, an Inf loss: only the
    all-reduced skip flag makes rank 0 skip too). Both steps are skipped on both ranks: weights, EMA
    and optimizer state stay those of iteration 1, equal on both ranks; iteration 4 steps both."""
    script = tmp_path / 'ddp_nan.py'
    script.write_text(DDP_NAN_SCRIPT)
    port = 29500 + (os.getpid() + 250) % 1000  # not the other DDP tests' ports
    proc = run(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}', str(script)], tmp_path,
               timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = torch.load(tmp_path / 'rank0.pt', weights_only=False)
    r1 = torch.load(tmp_path / 'rank1.pt', weights_only=False)
    assert r0['skipped'] == r1['skipped'] == 2
    for states in (r0['states'], r1['states']):
        assert_same_snapshot(states[0], states[1])  # iteration 2 skipped
        assert_same_snapshot(states[0], states[2])  # iteration 3 skipped
        assert not torch.equal(states[3]['net']['conv_first.weight'], states[0]['net']['conv_first.weight'])
    for a, b in zip(r0['states'], r1['states']):
        assert_same_snapshot(a, b)  # the ranks never diverge


# -- 8. clipping and the step options ------------------------------------------------------------
def test_grad_clip_bounds_the_norm_and_logs_it(tmp_path):
    """With grad_clip and max norm 1e-3 (the gradient norm is ~1e-2), the gradients Adam applies
    have total norm <= max_norm and keep their direction; grad_norm_g logs the norm before clipping.

    Tolerances: the norms of ~7k fp32 values are summed with rounding ~1e-6 relative, so <= max_norm
    x (1 + 1e-5); the clip coefficient is max_norm / (norm + 1e-6), 1e-4 short of max_norm / norm
    here, so the clipped norm is >= max_norm x (1 - 1e-3); scaling keeps the direction (cosine
    1 - 1e-5)."""
    max_norm = 1e-3
    clipped = make_model(tmp_path, train={'grad_clip': True, 'grad_clip_max_norm': max_norm})
    free = make_model(tmp_path)
    assert clipped.train_step.clip_max_norm == max_norm and free.train_step.clip_max_norm is None
    g_clipped, g_free = record_step_grads(clipped), record_step_grads(free)
    for it in (1, 2):
        for model in (clipped, free):
            train_on(model, batch(it), it)
        if it == 1:  # same weights: same unclipped gradients
            norm = float(g_free[0].norm())
            assert norm > 5 * max_norm
            assert float(clipped.log_dict['grad_norm_g']) == pytest.approx(norm, rel=1e-5)
            assert float(free.log_dict['grad_norm_g']) == pytest.approx(norm, rel=1e-5)
            assert float(F.cosine_similarity(g_clipped[0], g_free[0], dim=0)) >= 1 - 1e-5
    for grads in g_clipped:
        assert max_norm * (1 - 1e-3) <= float(grads.norm()) <= max_norm * (1 + 1e-5)
    assert float(clipped.log_dict['grad_norm_g']) > max_norm  # logged before clipping


def test_use_grad_clip_is_the_alias_of_grad_clip(tmp_path):
    """train.use_grad_clip (BasicSR's name) turns clipping on; an explicit train.grad_clip wins."""
    assert read_step_options({'train': {'use_grad_clip': True}}).grad_clip is True
    assert read_step_options({'train': {'use_grad_clip': True, 'grad_clip': False}}).grad_clip is False
    model = make_model(tmp_path, train={'use_grad_clip': True, 'grad_clip_max_norm': 0.5})
    assert model.train_step.clip_max_norm == 0.5
    assert make_model(tmp_path, train={'use_grad_clip': True}).train_step.clip_max_norm == 1.0


def test_step_option_typos_and_bad_values_are_rejected(tmp_path):
    """validate_options: a misspelled step option gets a did-you-mean; compile_mode outside its
    choices and accum_iter 0 are refused; the alias use_grad_clip is accepted."""
    folders = write_pair_folders(tmp_path / 'data', n_train=1, n_val=1)

    def problems(**overrides):
        try:
            validate_options(train_options(folders, 'x', **overrides))
        except OptionError as err:
            return str(err)
        return ''

    assert problems() == '' and problems(**{'train.use_grad_clip': True, 'datasets.train.accum_iter': 2}) == ''
    assert "unknown key 'train.grad_clp'; did you mean 'grad_clip'?" in problems(**{'train.grad_clp': True})
    message = problems(compile_mode='fast')
    assert "'compile_mode'" in message and 'fast' in message and 'max-autotune' in message
    assert "'datasets.train.accum_iter' must be at least 1" in problems(**{'datasets.train.accum_iter': 0})


# -- 9. accumulation -----------------------------------------------------------------------------
SGD = {'type': 'SGD', 'lr': 0.5}


def test_accumulation_equals_the_double_batch(tmp_path):
    """accum_iter 2 at batch 2 makes the update of batch 4: L1 with mean reduction, so the mean of
    the two halves' (equal-sized) losses is the whole batch's loss, and MSRResNet has no BatchNorm.

    SGD (linear in the gradient) so the weights differ only by the gradient's rounding: the two
    sum the per-sample contributions in another order (~1e-7 relative each, and a component can
    be a near-cancelling sum), so gradients agree to 1e-5 of the largest component and the weights
    after lr 0.5 x that to 1e-6 absolute. One optimizer step for the two micro-batches."""
    whole = make_model(tmp_path, train={'optim_g': dict(SGD)})
    accum = make_model(tmp_path, train={'optim_g': dict(SGD)}, **{'datasets.train.accum_iter': 2})
    assert accum.train_step.accum_iter == 2
    g_whole, g_accum = record_step_grads(whole), record_step_grads(accum)
    data = batch(1, b=4)
    train_on(whole, data, 1)
    train_on(accum, {k: v[:2] for k, v in data.items()}, 1)
    assert not g_accum, 'the optimizer stepped after the first micro-batch'
    train_on(accum, {k: v[2:] for k, v in data.items()}, 1)
    assert len(g_accum) == len(g_whole) == 1
    scale = float(g_whole[0].abs().max())
    torch.testing.assert_close(g_accum[0], g_whole[0], rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(flat_params(accum.net_g), flat_params(whole.net_g), rtol=0, atol=1e-6)
    assert float(accum.log_dict['l_pix']) == pytest.approx(float(whole.log_dict['l_pix']), rel=1e-6)


def test_ddp_accumulation_uses_no_sync_on_inner_micro_batches(tmp_path, monkeypatch):
    """Under DDP (one gloo process, world size 1, in this process) accum_iter 2 enters no_sync once
    per iteration, on the first micro-batch; the update equals the undistributed one (a world of 1
    averages over one rank; tolerance as for accumulation, 1e-6)."""
    import torch.distributed as dist
    entries = []
    plain_no_sync = DistributedDataParallel.no_sync

    @contextlib.contextmanager
    def counting_no_sync(self):
        entries.append(model.train_step.micro)
        with plain_no_sync(self):
            yield

    monkeypatch.setattr(DistributedDataParallel, 'no_sync', counting_no_sync)
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        model = make_model(tmp_path, train={'optim_g': dict(SGD)}, dist=True, **{'datasets.train.accum_iter': 2})
        assert isinstance(model.net_g, DistributedDataParallel)
        local = make_model(tmp_path, train={'optim_g': dict(SGD)}, **{'datasets.train.accum_iter': 2})
        for it in (1, 2):
            for micro in range(2):
                for m in (model, local):
                    train_on(m, batch(10 * it + micro), it)
            assert entries == [0] * it, entries
        torch.testing.assert_close(flat_params(model.net_g), flat_params(local.net_g), rtol=0, atol=1e-6)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def accum_run(tmp_path_factory):
    """One end-to-end run shared by the log and accumulation checks: 8 images, batch 1,
    accum_iter 2, total_iter 4, print_freq 1, grad_clip on."""
    root = tmp_path_factory.mktemp('accum_run')
    folders = write_pair_folders(root / 'data', n_train=8)
    opt = train_options(folders, 'accum', **{
        'datasets.train.batch_size_per_gpu': 1, 'datasets.train.accum_iter': 2, 'datasets.train.num_worker_per_gpu': 0,
        'train.total_iter': 4, 'train.grad_clip': True, 'logger.print_freq': 1, 'logger.save_checkpoint_freq': 4,
        'logger.use_tb_logger': False})
    del opt['datasets']['val'], opt['val']
    proc = run([TRAIN_PY, '-opt', write_yaml(root / 'accum.yml', opt)], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / 'experiments' / 'accum', proc.stderr


@pytest.mark.slow
def test_accumulation_run_counts_optimizer_steps(accum_run):
    """End to end, an iteration is one optimizer step: total_iter 4 with accum_iter 2 -> Adam's
    step count is 4 and 8 batches (the whole 8-image epoch at batch 1) were consumed."""
    exp, log = accum_run
    assert 'Accumulated micro-batches per step: 2' in log and 'Require iter number per epoch: 4' in log
    state = checkpoint.load_training_state(str(exp / 'training_states' / '4.state'))
    steps = {float(s['step']) for s in state['optimizers'][0]['state'].values()}
    assert steps == {4.0}
    assert state['batches_done'] == 8 and state['epoch'] == 0


LOG_LINE = re.compile(r'iter:\s*([\d,]+), lr:\([^)]*\)\] \[([^\]]*)\] (.*)$')


@pytest.mark.slow
def test_first_log_line_has_no_speed_and_later_ones_are_sane(accum_run):
    """print_freq 1: iteration 1's line (start-up costs, nothing measured yet) shows no it/s and no
    ETA; later lines do, and each rate is at most what the printed iteration times allow: the speed
    is measured from the end of iteration 1, so the time behind line n is at least the sum of the
    times of iterations 2..n, each printed to 1 ms (hence - 0.0005 each). grad_norm_g is logged."""
    _, log = accum_run
    lines = {int(m.group(1).replace(',', '')): m for m in map(LOG_LINE.search, log.splitlines()) if m}
    assert sorted(lines) == [1, 2, 3, 4], log[-3000:]
    assert 'it/s' not in lines[1].group(2) and 'eta' not in lines[1].group(2) and 'time (data)' in lines[1].group(2)
    times = {it: float(re.search(r'time \(data\): ([\d.]+)', m.group(2)).group(1)) for it, m in lines.items()}
    for it in (2, 3, 4):
        timing = lines[it].group(2)
        assert 'eta: ' in timing
        rate = float(re.search(r'([\d.]+) it/s', timing).group(1))
        least_time = sum(times[i] - 0.0005 for i in range(2, it + 1))
        assert rate > 0
        if least_time > 0:
            assert rate <= (it - 1) / least_time * 1.01 + 0.01, (it, rate, times)
    for m in lines.values():
        assert 'l_pix:' in m.group(3) and 'grad_norm_g:' in m.group(3)


# -- 11. no host reads in the hot step -------------------------------------------------------------
HOST_READS = ('item', 'tolist', '__float__', '__bool__', '__int__', '__index__', 'numpy')


def count_host_reads(fn):
    """Run ``fn`` with Tensor's host-reading methods counting their calls (a CPU stand-in for
    device syncs); returns the names called."""
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        for name in HOST_READS:
            plain = getattr(torch.Tensor, name)

            def counting(self, *args, _name=name, _plain=plain, **kwargs):
                calls.append(_name)
                return _plain(self, *args, **kwargs)

            mp.setattr(torch.Tensor, name, counting)
        fn()
    return calls


def test_hot_step_makes_no_host_reads(tmp_path):
    """An iteration off print_freq (feed_data + optimize_parameters, with EMA, clipping and the
    guard, fused Adam) reads nothing back: no Tensor.item / tolist / __float__ / __bool__ / __int__ /
    __index__ / numpy call. The counter does see reads: with a non-fused (foreach) Adam the guard's
    one documented host read (bool(found)) shows up."""
    fused = make_model(tmp_path, train={'grad_clip': True})
    assert fused.optimizer_g.defaults.get('fused')
    train_on(fused, batch(1), 1)  # optimizer state and lazy set-up
    assert count_host_reads(lambda: train_on(fused, batch(2), 2)) == []

    foreach = make_model(tmp_path, train={'grad_clip': True, 'optim_g': dict(ADAM, foreach=True)})
    assert not foreach.optimizer_g.defaults.get('fused')
    train_on(foreach, batch(1), 1)
    assert '__bool__' in count_host_reads(lambda: train_on(foreach, batch(2), 2))


# -- found by scripts/gpu_check.sh's CPU dry run ---------------------------------------------------
def test_channels_last_leaves_the_5d_expert_kernels_of_dasr_alone(tmp_path):
    """DASR's dynamic convolutions keep (experts, out, in, k, k) weights: only the 4-D tensors go
    to channels_last (``net.to(memory_format=...)`` raised on the 5-D ones); a step runs."""
    from realsr.models import build_model
    opt = {'model_type': 'SRGANDynamicModel', 'is_train': True, 'num_gpu': 0, 'dist': False, 'rank': 0,
           'world_size': 1, 'scale': 4, 'use_channels_last': True, 'path': {},
           'datasets': {'train': {'batch_size_per_gpu': 2}},
           'network_g': {'type': 'MSRResNetDynamic', 'num_feat': 8, 'num_block': 1, 'num_models': 5, 'upscale': 4,
                         'init_dynamic': True},
           'network_p': {'type': 'Degradation_Predictor', 'in_nc': 3, 'nf': 8, 'num_params': 33, 'num_networks': 5},
           'network_d': {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 4},
           'train': {'ema_decay': 0.9, 'optim_g': dict(ADAM), 'optim_d': dict(ADAM),
                     'pixel_opt': {'type': 'L1Loss'}, 'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla'}}}
    model = build_model(opt)
    for net in (model.net_g, model.net_g_ema, model.net_p, model.net_d):
        tensors = list(net.parameters()) + list(net.buffers())
        assert any(t.dim() == 5 for t in tensors) or net is model.net_p or net is model.net_d
        for t in tensors:
            if t.dim() == 4 and t.shape[1] > 1 and t.shape[-1] > 1:  # unambiguous layouts only
                assert t.is_contiguous(memory_format=torch.channels_last)
            if t.dim() == 5:
                assert t.is_contiguous()
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    assert all(math.isfinite(float(v)) for v in model.log_dict.values())


def test_compile_with_bf16_on_a_cpu_trains_eager_with_a_warning(tmp_path, force_bf16, realsr_log):
    """Inductor on a CPU under bf16 autocast gave zero gradients to RRDBNet's trunk (torch 2.13):
    such a run trains eager and says so; fp32 + compile still compiles."""
    model = make_model(tmp_path, use_amp=True, amp_bf16=True, use_compile=True)
    assert model.net_g is checkpoint.unwrap(model.net_g)  # not wrapped by torch.compile
    assert any('use_compile with mixed precision on a CPU is switched off' in w for w in warnings_of(realsr_log))
    assert make_model(tmp_path / 'fp32', use_compile=True).compile_nets


def test_fp16_scaler_overflows_do_not_count_towards_the_stop(tmp_path, realsr_log):
    """The grad scaler halves its scale on each overflowing step (11 of them from 65536 down to 32
    here): the steps are skipped and logged, but with finite losses they are not the streak that
    stops a run; a non-finite loss still is."""
    torch.manual_seed(0)
    net = torch.nn.Linear(16, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-9, fused=True)
    step = train_step_module.TrainStep(Precision('cpu', torch.float16), max_skips=10)
    step.add_group('g', [net], optimizer)
    x = torch.full((4, 16), 2000.0)
    for _ in range(14):
        with step.micro_batch() as s:
            out = s.forward(net, x)
            loss = out.square().mean()
            s.backward('g', loss, {'l_sq': loss})
    group = step.groups['g']
    assert int(group.skipped) >= 10 and group.scaler.get_scale() < 65536
    step.check(14)  # no NonFiniteError: the scaler recovered by itself
    assert any('skipped' in w for w in warnings_of(realsr_log))
    for _ in range(10):
        with step.micro_batch() as s:
            loss = s.forward(net, x).square().mean() * float('nan')
            s.backward('g', loss, {'l_nan': loss})
    with pytest.raises(NonFiniteError, match='l_nan'):
        step.check(24)


def test_cudnn_autotuning_is_on_for_the_step_only(tmp_path, monkeypatch):
    """cuDNN's benchmark mode (read on a CPU too: the flag is what is tested) is on while the
    training step runs, off while the degradations (feed_data) and validation run, and
    ``cudnn_benchmark: false`` switches it off for the step; a typo of the key is rejected."""
    from realsr import train
    seen = {'feed': set(), 'step': set(), 'val': set()}
    feed, step = SRModel.feed_data, SRModel.optimize_parameters

    def recording_feed(self, data):
        seen['feed'].add(torch.backends.cudnn.benchmark)
        return feed(self, data)

    def recording_step(self, current_iter):
        seen['step'].add(torch.backends.cudnn.benchmark)
        return step(self, current_iter)

    monkeypatch.setattr(SRModel, 'feed_data', recording_feed)
    monkeypatch.setattr(SRModel, 'optimize_parameters', recording_step)
    monkeypatch.setattr(SRModel, 'infer', lambda self, lq, _infer=SRModel.infer: (  # validation runs infer()
        seen['val'].add(torch.backends.cudnn.benchmark), _infer(self, lq))[1])
    folders = write_pair_folders(tmp_path / 'data', n_train=4)
    monkeypatch.chdir(tmp_path)
    for name, flag in (('autotune_on', True), ('autotune_off', False)):
        opt = train_options(folders, name, **{'train.total_iter': 2, 'val.val_freq': 2, 'logger.print_freq': 1,
                                              'logger.save_checkpoint_freq': 2, 'datasets.train.num_worker_per_gpu': 0,
                                              'cudnn_benchmark': flag})
        for values in seen.values():
            values.clear()
        train.main(['-opt', write_yaml(tmp_path / f'{name}.yml', opt)])
        assert seen == {'feed': {False}, 'step': {flag}, 'val': {False}}, (name, seen)
    with pytest.raises(OptionError, match='did you mean .cudnn_benchmark'):
        validate_options({**sr_opt(tmp_path), 'cudnn_benchmrk': True}, check_paths=False)
