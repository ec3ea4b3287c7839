"""Benchmark realsr's training step (:class:`realsr.runtime.train_step.TrainStep` through the
models' ``optimize_parameters``) per arch in fp32 eager NCHW (the baseline: what realsr did
before), channels_last, bf16 autocast, bf16 + channels_last, bf16 + channels_last +
``torch.compile``, and on CUDA also fp16 (GradScaler) and fp16 + channels_last.

    python scripts/bench_train.py [--archs MSRResNet RRDBNet] [--settings fp32 bf16] [--steps N]
                                  [--rounds R] [--batch B] [--lq-size S] [--device cpu|cuda] [--out x.md|x.json]

Everything runs in one process. Each (arch, setting) is a model built with
``realsr.models.build_model`` from an option dict, from the same seed (same initial weights), and
trained on the same fixed batches of paired data (SR-style; the DASR arch trains as
``SRGANDynamicModel`` with its degradation predictor and discriminator), so the on-the-fly
degradations do not enter the time. Every step re-seeds the global RNG with its iteration, so
dropout / drop-path draws are the same in every setting.

Timing: ``--warmup`` steps per setting first (compilation happens there; reported as the compile
time), then ``--rounds`` rounds; in each round every setting trains ``--steps`` steps, the
settings in an order rotated each round (so noise from other processes hits them all alike). The
table gives the median per-step time over the rounds as it/s, the best round, and the ratio to
fp32 of the same arch measured in the same run.

Memory: one more step per setting after the timing, from gradients set to None: the peak of the
tensor memory above what was allocated when the step started (weights, optimizer and EMA state
are not counted; gradients, activations and temporaries are). CUDA: from
``torch.cuda.max_memory_allocated`` (reset before the step). CPU: from the allocation and free
events of the CPU tensor allocator recorded by ``torch.profiler`` (memory that oneDNN or
compiled kernels allocate outside the tensor allocator is not seen).

Loss: ``l_pix`` of the last timed step (the same iteration and batch in every setting) beside
fp32's, and their relative difference: a setting that trains differently shows there.

Compile: "compile s" is the wall time of the warm-up steps of a compile setting (compilation
included). Inductor's on-disk caches make a repeated run faster; for a cold compile run with
``TORCHINDUCTOR_FX_GRAPH_CACHE=0 TORCHINDUCTOR_AUTOGRAD_CACHE=0``. A setting that fails (compile
errors included) gets a row saying why, and the others go on.
"""
import argparse
import contextlib
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

try:
    import realsr  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.models import build_model  # noqa: E402

SETTINGS = {  # name -> the step options it sets (top level of the option file)
    'fp32': {},
    'channels_last': {'use_channels_last': True},
    'bf16': {'use_amp': True, 'amp_bf16': True},
    'bf16+cl': {'use_amp': True, 'amp_bf16': True, 'use_channels_last': True},
    'bf16+cl+compile': {'use_amp': True, 'amp_bf16': True, 'use_channels_last': True, 'use_compile': True},
    'fp16': {'use_amp': True, 'amp_bf16': False},
    'fp16+cl': {'use_amp': True, 'amp_bf16': False, 'use_channels_last': True},
}
CUDA_ONLY = ('fp16', 'fp16+cl')
BASELINE = 'fp32'

ADAM = {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]}


def arch_options(name, device_type, rrdb_blocks=None):
    """``(model_type, option keys)`` of a benchmarked arch (the recipes' x4 networks; RRDBNet is
    shortened on a CPU)."""
    if name == 'MSRResNet':
        return 'SRModel', {'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64,
                                         'num_block': 16, 'upscale': 4}}
    if name == 'RRDBNet':
        blocks = rrdb_blocks or (23 if device_type == 'cuda' else 6)
        return 'SRModel', {'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64,
                                         'num_block': blocks, 'num_grow_ch': 32, 'scale': 4}}
    if name == 'SwinIR-light':
        return 'SwinIRModel', {'network_g': {
            'type': 'SwinIR', 'upscale': 4, 'in_chans': 3, 'img_size': 64, 'window_size': 8, 'img_range': 1.0,
            'embed_dim': 60, 'depths': [6, 6, 6, 6], 'num_heads': [6, 6, 6, 6], 'mlp_ratio': 2,
            'upsampler': 'pixelshuffledirect', 'resi_connection': '1conv'}}
    if name == 'DRCT-small':  # 4 groups of 5 Swin blocks, 60 + 12k channels, window 8
        return 'DRCTModel', {'network_g': {
            'type': 'DRCT', 'upscale': 4, 'in_chans': 3, 'img_size': 64, 'window_size': 8, 'img_range': 1.0,
            'embed_dim': 60, 'depths': [6, 6, 6, 6], 'num_heads': [6, 6, 6, 6], 'gc': 12, 'mlp_ratio': 2,
            'upsampler': 'pixelshuffle', 'resi_connection': '1conv'}}
    if name == 'MSRResNetDynamic':  # DASR: predictor + dynamic generator + U-Net discriminator
        return 'SRGANDynamicModel', {
            'network_g': {'type': 'MSRResNetDynamic', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 16,
                          'num_models': 5, 'upscale': 4, 'init_dynamic': True},
            'network_p': {'type': 'Degradation_Predictor', 'in_nc': 3, 'nf': 64, 'num_params': 33,
                          'num_networks': 5},
            'network_d': {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 64, 'skip_connection': True},
            'train': {'optim_d': dict(ADAM, lr=1e-4),
                      'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'real_label_val': 1.0,
                                  'fake_label_val': 0.0, 'loss_weight': 0.1}}}
    raise ValueError(f'unknown arch {name!r}')


ARCHS = ('MSRResNet', 'RRDBNet', 'SwinIR-light', 'DRCT-small', 'MSRResNetDynamic')


def build_options(arch, setting, args, device, workdir):
    model_type, extra = arch_options(arch, device.type, args.rrdb_blocks)
    opt = {
        'name': f'bench_{arch}_{setting}', 'model_type': model_type, 'scale': 4, 'is_train': True, 'dist': False,
        'rank': 0, 'world_size': 1, 'num_gpu': 1 if device.type == 'cuda' else 0, 'device': str(device),
        'manual_seed': 0, 'compile_mode': args.compile_mode,
        'datasets': {'train': {'name': 'bench', 'type': 'PairedImageDataset', 'gt_size': args.lq_size * 4,
                               'batch_size_per_gpu': args.batch}},
        'path': {'models': os.path.join(workdir, 'models'), 'training_states': os.path.join(workdir, 'states')},
        'train': {'ema_decay': 0.999, 'optim_g': dict(ADAM), 'total_iter': 10**6, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
    }
    opt.update(SETTINGS[setting])
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(opt.get(key), dict):
            opt[key].update(value)
        else:
            opt[key] = value
    return opt


def make_batches(n, batch, lq_size, device, seed=0):
    """``n`` fixed (lq, gt) batches: smooth colour fields with texture as GT, LQ by area x4
    downscaling (in fp32, on ``device``)."""
    g = torch.Generator().manual_seed(seed)
    size = lq_size * 4
    out = []
    for _ in range(n):
        low = torch.rand(batch, 3, max(size // 16, 2), max(size // 16, 2), generator=g)
        gt = torch.nn.functional.interpolate(low, size=(size, size), mode='bicubic', align_corners=False)
        gt = (gt + 0.05 * torch.randn(batch, 3, size, size, generator=g)).clamp(0, 1)
        lq = torch.nn.functional.avg_pool2d(gt, 4)
        out.append({'lq': lq.to(device), 'gt': gt.to(device)})
    return out


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def first_line(err):
    text = str(err).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), '')
    return f'{type(err).__name__}: {line}' if line else type(err).__name__


class Run:
    """One (arch, setting): its model, the next iteration, its measurements."""

    def __init__(self, arch, setting):
        self.arch, self.setting = arch, setting
        self.model = None
        self.next_iter = 1
        self.times = []  # seconds per step, one per round
        self.warmup_s = None
        self.loss = None
        self.step_mb = None
        self.precision = '-'
        self.error = None

    def steps(self, n, batches, device):
        for _ in range(n):
            it = self.next_iter
            torch.manual_seed(it)  # the same dropout / drop-path draws in every setting
            self.model.feed_data(batches[(it - 1) % len(batches)])
            self.model.optimize_parameters(it)
            self.next_iter += 1
        sync(device)

    def zero_grads(self):
        for optimizer in self.model.optimizers:
            optimizer.zero_grad(set_to_none=True)


def cpu_step_peak_bytes(fn):
    """Peak tensor memory (bytes) above the start while ``fn`` runs on the CPU, from the profiler's
    allocation / free events of the CPU allocator."""
    from torch.profiler import ProfilerActivity, profile
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        if e.device_type() == torch.autograd.DeviceType.CPU:
            current += e.nbytes()
            peak = max(peak, current)
    return peak


def measure_memory(run, batches, device):
    """MB of tensor memory one more step needs above what is allocated when it starts (grads None)."""
    run.zero_grads()
    gc.collect()
    if device.type == 'cuda':
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run.steps(1, batches, device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return cpu_step_peak_bytes(lambda: run.steps(1, batches, device)) / 2**20


@contextlib.contextmanager
def quiet_realsr_logger():
    """realsr logs model creation at INFO; keep its warnings (e.g. a precision fallback) only."""
    logger = logging.getLogger('realsr')
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def bench_arch(arch, settings, args, device, batches, workdir, log):
    runs = [Run(arch, s) for s in settings]
    for run in runs:
        if device.type != 'cuda' and run.setting in CUDA_ONLY:
            run.error = 'skipped: fp16 autocast is CUDA only'
            continue
        try:
            torch.manual_seed(0)  # the same initial weights in every setting
            with quiet_realsr_logger():
                run.model = build_model(build_options(arch, run.setting, args, device, workdir))
            run.precision = run.model.train_step.precision.name().replace(' + channels_last', '+cl')
            sync(device)
            start = time.perf_counter()
            run.steps(args.warmup, batches, device)
            run.warmup_s = time.perf_counter() - start
            log(f'  {arch:16s} {run.setting:16s} built ({run.precision}), {args.warmup} warm-up step(s): '
                f'{run.warmup_s:.1f} s')
        except Exception as err:  # noqa: BLE001 - the row says what failed, the others go on
            run.error = first_line(err)
            run.model = None
            log(f'  {arch:16s} {run.setting:16s} FAILED: {run.error}')
    live = [r for r in runs if r.model is not None]
    for rnd in range(args.rounds):
        shift = rnd % max(len(live), 1)
        for run in live[shift:] + live[:shift]:
            if run.error:
                continue
            try:
                start = time.perf_counter()
                run.steps(args.steps, batches, device)
                run.times.append((time.perf_counter() - start) / args.steps)
            except Exception as err:  # noqa: BLE001
                run.error = first_line(err)
                log(f'  {arch:16s} {run.setting:16s} FAILED in round {rnd + 1}: {run.error}')
        done = ', '.join(f'{r.setting} {1 / r.times[-1]:.2f}' for r in live if r.times and not r.error)
        log(f'  {arch:16s} round {rnd + 1}/{args.rounds} it/s: {done}')
    for run in live:
        if run.error:
            continue
        run.loss = float(run.model.log_dict['l_pix'])  # the same iteration and batch in every setting
        try:
            run.step_mb = measure_memory(run, batches, device)
        except Exception as err:  # noqa: BLE001
            log(f'  {arch:16s} {run.setting:16s} memory step failed: {first_line(err)}')
    for run in runs:
        run.model = None
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    torch._dynamo.reset()
    return runs


def rows_of(runs, args):
    base = next((r for r in runs if r.setting == BASELINE and r.times and not r.error), None)
    base_t = statistics.median(base.times) if base else None
    rows = []
    for r in runs:
        ok = bool(r.times) and not r.error
        med = statistics.median(r.times) if ok else None
        rows.append({
            'arch': r.arch, 'setting': r.setting, 'precision': r.precision,
            'it_s': 1 / med if ok else None, 'best_it_s': 1 / min(r.times) if ok else None,
            'vs_fp32': base_t / med if ok and base_t else None,
            'step_mb': r.step_mb, 'loss': r.loss, 'fp32_loss': base.loss if base else None,
            'loss_rel': (r.loss - base.loss) / abs(base.loss) if r.loss is not None and base and base.loss else None,
            'compile_s': r.warmup_s if ok and SETTINGS[r.setting].get('use_compile') else None,
            'warmup_s': r.warmup_s, 'steps': args.warmup + args.rounds * args.steps if ok else None,
            'note': r.error or '',
        })
    return rows


COLUMNS = [('arch', 'arch'), ('setting', 'setting'), ('precision', 'ran as'), ('it_s', 'it/s'),
           ('best_it_s', 'best it/s'), ('vs_fp32', 'x fp32'), ('step_mb', 'step MB'), ('loss', 'l_pix'),
           ('fp32_loss', 'fp32 l_pix'), ('loss_rel', 'rel. diff'), ('compile_s', 'compile s'), ('note', 'note')]


def _cell(key, value):
    if value is None:
        return '-'
    if key in ('it_s', 'best_it_s'):
        return f'{value:.2f}'
    if key == 'vs_fp32':
        return f'{value:.2f}x'
    if key == 'step_mb':
        return f'{value:.0f}'
    if key in ('loss', 'fp32_loss'):
        return f'{value:.6g}'
    if key == 'loss_rel':
        return f'{value:+.1e}'
    if key == 'compile_s':
        return f'{value:.1f}'
    return str(value).replace('|', '/')


def markdown_table(rows):
    lines = ['| ' + ' | '.join(title for _, title in COLUMNS) + ' |',
             '|' + '|'.join('---' if k in ('arch', 'setting', 'precision', 'note') else '---:' for k, _ in COLUMNS)
             + '|']
    for row in rows:
        lines.append('| ' + ' | '.join(_cell(k, row[k]) for k, _ in COLUMNS) + ' |')
    return '\n'.join(lines)


def describe(args, device):
    if device.type == 'cuda':
        where = f'{torch.cuda.get_device_name(device)}'
        mem = 'step MB: torch.cuda.max_memory_allocated during one step minus what was allocated at its start'
    else:
        where = f'CPU, {torch.get_num_threads()} torch threads'
        mem = ('step MB: peak CPU tensor memory during one step above its start (torch.profiler allocator events; '
               'not process RSS)')
    return (f'torch {torch.__version__}, {where}; batch {args.batch}, LQ {args.lq_size}x{args.lq_size}, x4; '
            f'{args.warmup} warm-up + {args.rounds} rounds x {args.steps} steps per setting (it/s: median round); '
            f'{mem}; l_pix at step {args.warmup + args.rounds * args.steps}')


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', nargs='+', default=list(ARCHS), choices=ARCHS)
    parser.add_argument('--settings', nargs='+', default=None, choices=list(SETTINGS),
                        help='default: all (fp16 ones on CUDA only); fp32 is always measured as the baseline')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--steps', type=int, default=None, help='timed steps per round (default 4 CPU, 20 CUDA)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps first (compilation happens there)')
    parser.add_argument('--batch', type=int, default=None, help='default 8 on a CPU, 16 on CUDA')
    parser.add_argument('--lq-size', type=int, default=None, help='LQ side (default 32 on a CPU, 64 on CUDA)')
    parser.add_argument('--rrdb-blocks', type=int, default=None, help='RRDBNet blocks (default 6 CPU, 23 CUDA)')
    parser.add_argument('--compile-mode', default='default')
    parser.add_argument('--out', default=None, help='write the table: .json for JSON, else markdown')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    if cuda and not torch.cuda.is_available():
        parser.error('--device cuda, but no CUDA device is visible')
    args.steps = args.steps or (20 if cuda else 4)
    args.batch = args.batch or (16 if cuda else 8)
    args.lq_size = args.lq_size or (64 if cuda else 32)
    if args.settings is None:
        args.settings = [s for s in SETTINGS if cuda or s not in CUDA_ONLY]
    if BASELINE not in args.settings:
        args.settings = [BASELINE] + list(args.settings)
    return args, device


def main(argv=None, log=print):
    """Run the benchmark; returns ``(rows, markdown table)``."""
    args, device = parse_args(argv)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    log(describe(args, device))
    batches = make_batches(4, args.batch, args.lq_size, device)
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench_train_') as workdir:
        for arch in args.archs:
            rows += rows_of(bench_arch(arch, args.settings, args, device, batches, workdir, log), args)
    table = markdown_table(rows)
    log('')
    log(table)
    if args.out:
        if args.out.endswith('.json'):
            with open(args.out, 'w') as f:
                json.dump({'setup': describe(args, device), 'rows': rows}, f, indent=1)
        else:
            with open(args.out, 'w') as f:
                f.write(describe(args, device) + '\n\n' + table + '\n')
    return rows, table


if __name__ == '__main__':
    main()
