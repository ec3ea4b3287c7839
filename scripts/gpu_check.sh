#!/usr/bin/env bash
# Run every CUDA path of realsr once on one GPU, in a few minutes, and print one summary table
# (one line per check: name, PASS/FAIL/SKIP, seconds, a short note), then the tables of the two
# benchmarks. Exits 1 when a check failed (all checks run regardless), 2 when no GPU is visible.
#
#   bash scripts/gpu_check.sh                                # on a machine with a GPU
#   REALSR_GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh    # dry run of the same checks on the CPU
#
# Checks, each on small networks and tiny datasets generated in a temporary folder:
#   env                  torch, the device, bf16 support
#   degradation/device   the second-order and DASR degradations on the device with a device
#                        generator: deterministic per seed, shapes, range, 8-bit quantisation
#   compile gradients    one backward of small RRDBNet / MSRResNet / SwinIR under bf16 autocast
#                        (and RRDBNet in fp16) on a GPU; RRDBNet / MSRResNet in fp32 on a CPU; eager and
#                        torch.compile'd: every parameter gets its gradient, the gradients agree
#   train <model>/<mode> realsr/train.py's pipeline (train.main in-process, one process per
#                        model) on a generated YAML: SRModel (MSRResNet), RealESRNetModel
#                        (RRDBNet), RealESRGANModel (RRDBNet + U-Net D + VGG perceptual loss on
#                        random VGG weights), DASRModel (MSRResNetDynamic + predictor + D),
#                        SwinIRModel (SwinIR) and RealDRCTGANModel (DRCT + D), each from the
#                        repository's option file where there is one, shrunk; modes fp32, bf16,
#                        fp16 (use_amp, amp_bf16: false), cl (bf16 + channels_last) and compile
#                        (bf16 + torch.compile; fp32 on a CPU); training, a validation and a
#                        checkpoint each;
#                        checked: losses finite, the precision the step reports (and its
#                        GradScaler), channels_last weights, the compiled wrappers, the checkpoint
#   ddp torchrun x1      torchrun --nproc_per_node=1 realsr/train.py --launcher pytorch (NCCL on a
#                        GPU), with accum_iter 2 (no_sync), mixed precision and channels_last
#   bench_degradation    scripts/bench_degradation.py at short settings (table printed at the end)
#   sdpa kernels         which scaled_dot_product_attention kernel SwinIR's window attention gets
#                        (learned bias, detached mask, bool mask; head dim 30 and 32), with timings
#   bench_train          scripts/bench_train.py at short settings, bf16+cl+compile included on a
#                        GPU (table printed at the end)
#
# With REALSR_GPU_CHECK_DEVICE=cpu the same commands run on the CPU at smaller sizes: fp16 is
# reported as SKIP (CUDA only), DDP runs over gloo instead of NCCL, and the compile mode runs for
# SRModel only (C++ compilation takes minutes per model on a small CPU).
#
# Time: every check has a time limit, and all of them share a budget (REALSR_GPU_CHECK_BUDGET_S,
# default 470 s on a GPU): a check that would start past it is a FAIL ("not run"), so the whole
# script ends in about 8 minutes whatever hangs.
#
# Environment: REALSR_GPU_CHECK_MODELS, REALSR_GPU_CHECK_MODES (space-separated subsets),
# REALSR_GPU_CHECK_COMPILE (the models whose compile mode runs, or "all"; default on a GPU: all
# but RealESRNetModel and RealDRCTGANModel, whose networks and discriminator the others cover),
# REALSR_GPU_CHECK_KEEP=1 keeps the work folder (it is kept anyway when a check failed),
# PYTHON (default: python).
set -u -o pipefail

DEVICE=${REALSR_GPU_CHECK_DEVICE:-cuda}
PYTHON=${PYTHON:-python}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODELS=${REALSR_GPU_CHECK_MODELS:-SRModel RealESRNetModel RealESRGANModel DASRModel SwinIRModel RealDRCTGANModel}
MODES=${REALSR_GPU_CHECK_MODES:-fp32 bf16 fp16 cl compile}
if [ "$DEVICE" = cuda ]; then
  COMPILE=${REALSR_GPU_CHECK_COMPILE:-SRModel RealESRGANModel DASRModel SwinIRModel}
  BUDGET=${REALSR_GPU_CHECK_BUDGET_S:-470}
else
  COMPILE=${REALSR_GPU_CHECK_COMPILE:-SRModel}
  BUDGET=${REALSR_GPU_CHECK_BUDGET_S:-1800}
fi

case "$DEVICE" in
  cuda|cpu) ;;
  *) echo "gpu_check: REALSR_GPU_CHECK_DEVICE must be cuda or cpu, not '$DEVICE'" >&2; exit 2 ;;
esac
if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1; then
  echo "gpu_check: no CUDA device is visible" \
       "('$PYTHON -c \"import torch; assert torch.cuda.is_available()\"' failed)." >&2
  echo "gpu_check: run it on a machine with a GPU and a CUDA build of torch, or do a dry run on the CPU:" >&2
  echo "gpu_check:     REALSR_GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh" >&2
  exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/realsr_gpu_check.XXXXXX")
LOGS=$WORK/logs
RESULTS=$WORK/results.tsv
mkdir -p "$LOGS"
: >"$RESULTS"
export REALSR_REPO=$REPO PYTHONUNBUFFERED=1 REALSR_VGG_WEIGHTS=$WORK/data/vgg19.pth
START=$(date +%s.%N)

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
budget_left() {
  awk -v a="$START" -v b="$(date +%s.%N)" -v n="$BUDGET" 'BEGIN { r = n - (b - a); printf "%d", (r > 0 ? r : 0) }'
}
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }
log_name() { echo "$LOGS/$(echo "$1" | tr -c 'A-Za-z0-9_.\n-' '_').log"; }
# the last line of a log that looks like an error, else its last line
error_line() {
  { grep -E '(Error|error|FAILED|Traceback|Killed|assert)' "$1" | tail -n 1; tail -n 1 "$1"; } | head -n 1 | cut -c1-150
}

# run_check NAME LIMIT_S COMMAND...: runs COMMAND with its output in the check's log, for at most
# LIMIT_S seconds and what is left of the budget; returns its exit status (125: not run, the budget
# is spent). Sets CHECK_LOG, CHECK_SECONDS and, when it did not exit 0, CHECK_NOTE (why).
run_check() {
  local name=$1 limit=$2; shift 2
  local log t0 rc left
  log=$(log_name "$name")
  CHECK_LOG=$log
  CHECK_NOTE=
  CHECK_SECONDS=0.0
  left=$(budget_left)
  if [ "$left" -lt 10 ]; then
    CHECK_NOTE="not run: the ${BUDGET} s budget (REALSR_GPU_CHECK_BUDGET_S) is spent"
    echo "gpu_check: $name: $CHECK_NOTE"
    return 125
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  t0=$(date +%s.%N)
  echo "gpu_check: $name ..."
  timeout --kill-after=15 "$limit" "$@" >"$log" 2>&1
  rc=$?
  CHECK_SECONDS=$(elapsed "$t0")
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    CHECK_NOTE="timed out after ${limit} s; log: $log"
  elif [ $rc -ne 0 ]; then
    CHECK_NOTE="exit $rc: $(error_line "$log"); log: $log"
  fi
  return $rc
}

# -- the Python side: datasets, option files, the in-process training checks -----------------
cat >"$WORK/checks.py" <<'PYEOF'
"""gpu_check.sh's Python part: datasets, option files and checks that report one line each."""
import argparse
import copy
import math
import os
import sys
import time
import traceback

REPO = os.environ['REALSR_REPO']
sys.path.insert(0, REPO)

MODES = {
    'fp32': {},
    'bf16': {'use_amp': True, 'amp_bf16': True},
    'fp16': {'use_amp': True, 'amp_bf16': False},
    'cl': {'use_amp': True, 'amp_bf16': True, 'use_channels_last': True},
    'compile': {'use_amp': True, 'amp_bf16': True, 'use_compile': True},
}


def mode_options(mode, device):
    """The step options of ``mode``; on a CPU compile runs in fp32, since realsr trains eager when
    asked to compile under bf16 there (Inductor drops gradients, see docs/training.md)."""
    if mode == 'compile' and device != 'cuda':
        return {'use_compile': True}
    return MODES[mode]
VGG19_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512),
               (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512)]


def record(results, name, status, seconds, note=''):
    note = ' '.join(str(note).replace('\t', ' ').split())[:200]
    with open(results, 'a') as f:
        f.write(f'{name}\t{status}\t{seconds:.1f}\t{note}\n')
    print(f'{status} {name} ({seconds:.1f} s) {note}', flush=True)


def first_line(err):
    line = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), '')
    return f'{type(err).__name__}: {line}' if line else type(err).__name__


# -- data --------------------------------------------------------------------------------------
def write_data(root):
    """Paired train (8) and val (1) images, 96 px HR / 24 px LR, and random VGG19 weights."""
    import cv2
    import numpy as np
    import torch
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96] / 96
    for split, n in (('train', 8), ('val', 1)):
        hr_dir, lr_dir = os.path.join(root, split, 'HR'), os.path.join(root, split, 'LR_x4')
        os.makedirs(hr_dir, exist_ok=True)
        os.makedirs(lr_dir, exist_ok=True)
        for i in range(n):
            base = np.stack([np.sin(6 * xx * (c + 1) + rng.uniform(0, 6)) * np.cos(5 * yy + c) for c in range(3)], -1)
            img = np.clip((base * 0.4 + 0.5 + rng.normal(0, 0.05, base.shape)) * 255, 0, 255).astype(np.uint8)
            cv2.imwrite(os.path.join(hr_dir, f'img{i:02d}.png'), img)
            lr = cv2.resize(img, (24, 24), interpolation=cv2.INTER_AREA)
            cv2.imwrite(os.path.join(lr_dir, f'img{i:02d}.png'), lr)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for idx, cin, cout in VGG19_CONVS:  # torchvision's vgg19 layout; the perceptual loss only needs its shape
        sd[f'features.{idx}.weight'] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (cin * 9))**0.5
        sd[f'features.{idx}.bias'] = torch.zeros(cout)
    torch.save(sd, os.path.join(root, 'vgg19.pth'))


# -- option files --------------------------------------------------------------------------------
def _load(name):
    import yaml
    with open(os.path.join(REPO, 'options', 'train', name), encoding='utf-8') as f:
        return yaml.safe_load(f)


def options(model, device, data, batch, gt_size, iters):
    """The option dict of ``model``: the repository's recipe where there is one, shrunk (a
    ``gt_size`` crop, ``iters`` iterations, a checkpoint and a validation at the end)."""
    cuda = device == 'cuda'
    paired_train = {'name': 'tiny_train', 'type': 'PairedImageDataset', 'dataroot_gt': f'{data}/train/HR',
                    'dataroot_lq': f'{data}/train/LR_x4', 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
                    'gt_size': gt_size, 'use_hflip': True, 'use_rot': True}
    paired_val = {'name': 'tiny_val', 'type': 'PairedImageDataset', 'dataroot_gt': f'{data}/val/HR',
                  'dataroot_lq': f'{data}/val/LR_x4', 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}}
    psnr = {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': False}}
    if model in ('SRModel', 'SwinIRModel'):
        opt = _load('train_MSRResNet_x4.yml')
        opt['datasets'] = {'train': paired_train, 'val': paired_val}
        opt['network_g'].update(num_feat=16, num_block=2)
        if model == 'SwinIRModel':
            opt['model_type'] = 'SwinIRModel'
            opt['network_g'] = {'type': 'SwinIR', 'upscale': 4, 'in_chans': 3, 'img_size': gt_size // 4,
                                'window_size': 8, 'img_range': 1.0, 'embed_dim': 24, 'depths': [2, 2],
                                'num_heads': [2, 2], 'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect',
                                'resi_connection': '1conv'}
    elif model in ('RealESRNetModel', 'RealESRGANModel', 'RealDRCTGANModel', 'DASRModel'):
        opt = _load({'RealESRNetModel': 'train_RealESRNet_x4plus.yml', 'RealESRGANModel': 'train_RealESRGAN_x4plus.yml',
                     'RealDRCTGANModel': 'train_Real_DRCT_GAN_x4.yml', 'DASRModel': 'train_DASR_x4.yml'}[model])
        assert opt['model_type'] == model, (model, opt['model_type'])
        opt['datasets']['train'].update(dataroot_gt=f'{data}/train/HR', meta_info=None, crop_pad_size=96,
                                        gt_size=gt_size, io_backend={'type': 'disk'})
        opt.update(gt_size=gt_size, queue_size=2 * batch)
        if model == 'DASRModel':  # its file validates on LQ-only images (outputs saved, no metric)
            opt['datasets']['val'] = {'name': 'tiny_val_lq', 'type': 'SingleImageDataset',
                                      'dataroot_lq': f'{data}/val/LR_x4', 'io_backend': {'type': 'disk'}}
            opt['network_g'].update(num_feat=16, num_block=2, init_dynamic=True)
            opt['network_p'].update(nf=16)
        else:
            opt['datasets']['val'] = paired_val
        if model in ('RealESRNetModel', 'RealESRGANModel'):
            opt['network_g'].update(num_feat=16, num_block=1, num_grow_ch=8)
        if model == 'RealDRCTGANModel':
            opt['network_g'].update(img_size=gt_size // 4, window_size=8, embed_dim=24, depths=[2], num_heads=[4], gc=8)
        if 'network_d' in opt:
            opt['network_d']['num_feat'] = 16
    else:
        raise ValueError(f'unknown model {model!r}')
    opt.update(name=f'check_{model}', num_gpu=1 if cuda else 0, manual_seed=0)
    opt['path'].update(pretrain_network_g=None, resume_state=None)
    opt['path'].pop('pretrain_network_p', None)
    opt['datasets']['train'].update(num_worker_per_gpu=0, batch_size_per_gpu=batch, dataset_enlarge_ratio=1,
                                    prefetch_mode='cuda' if cuda else 'cpu')
    opt['train'].update(total_iter=iters, warmup_iter=-1)
    opt['val'] = ({'val_freq': iters, 'save_img': True} if model == 'DASRModel'  # LQ only: outputs saved
                  else {'val_freq': iters, 'save_img': False, 'metrics': psnr})
    opt['logger'] = {'print_freq': 2, 'save_checkpoint_freq': iters, 'use_tb_logger': False}
    return opt


def write_yaml(path, opt):
    import yaml
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


# -- checks ----------------------------------------------------------------------------------------
def verify(model, opt, mode, device):
    """Raise AssertionError when a trained model does not show what ``mode`` asked; return a note."""
    import torch
    from realsr.runtime.checkpoint import unwrap
    log = model.get_current_log()
    bad = {k: v for k, v in log.items() if not math.isfinite(float(v))}
    assert log and not bad, f'non-finite logged values {bad}'
    net_g = unwrap(model.net_g)
    assert next(net_g.parameters()).device.type == device, 'net_g is not on the device'
    precision = model.train_step.precision
    want = mode_options(mode, device)
    notes = [f'ran as {precision.name()}']
    if want.get('use_amp'):
        asked = torch.bfloat16 if want.get('amp_bf16') else torch.float16
        if precision.dtype != asked:
            fell_back = (asked == torch.float16 and precision.dtype == torch.bfloat16
                         and getattr(type(net_g), 'fp16_overflows', False))
            no_bf16 = asked == torch.bfloat16 and precision.dtype is None and device == 'cuda' \
                and not torch.cuda.is_bf16_supported()
            assert fell_back or no_bf16, f'asked for {asked}, the step runs {precision.name()}'
            notes.append('(fp16_overflows arch)' if fell_back else '(no bf16 on this GPU)')
        if precision.dtype == torch.float16:
            scaler = model.train_step.groups['g'].scaler
            assert scaler is not None, 'fp16 without a GradScaler'
            notes.append(f'scale {scaler.get_scale():g}')
    if want.get('use_channels_last'):
        # every 4-D weight (DASR's dynamic convolutions hold 5-D expert kernels, left as they are)
        weights = [p for p in net_g.parameters() if p.dim() == 4]
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights), \
            'net_g 4-D weights are not channels_last'
    if want.get('use_compile'):
        assert type(model.net_g).__name__ == 'OptimizedModule', f'net_g is a {type(model.net_g).__name__}'
        if getattr(model, 'net_d', None) is not None:
            assert type(model.net_d).__name__ == 'OptimizedModule', f'net_d is a {type(model.net_d).__name__}'
    ckpt = os.path.join(model.opt['path']['models'], 'net_g_latest.pth')
    assert os.path.isfile(ckpt), f'no {ckpt}'
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert not any(k.startswith('_orig_mod.') for k in state['params']), 'the checkpoint keeps the compile prefix'
    loss = next((k for k in log if k.startswith('l_') and k.endswith('pix')), None)
    if loss:
        notes.append(f'{loss} {float(log[loss]):.4g}')
    skipped = sum(int(g.skipped) for g in model.train_step.groups.values())
    if skipped:
        notes.append(f'{skipped} step(s) skipped (non-finite)')
    return ', '.join(notes)


def cmd_train(args):
    import torch
    from realsr import train
    failed = False
    compile_here = args.compile == 'all' or args.model in args.compile.split()
    for mode in args.modes:
        name = f'train {args.model}/{mode}'
        if mode == 'fp16' and args.device != 'cuda':
            record(args.results, name, 'SKIP', 0, 'fp16 autocast is CUDA only (the CPU mixed precision is bf16)')
            continue
        if mode == 'compile' and not compile_here:
            record(args.results, name, 'SKIP', 0, f'compiled here: {args.compile} '
                   '(REALSR_GPU_CHECK_COMPILE=all for every model)')
            continue
        opt = options(args.model, args.device, args.data, args.batch, args.gt_size, args.iters)
        opt['name'] = f'check_{args.model}_{mode}'
        opt.update(mode_options(mode, args.device))
        run_dir = os.path.join(args.runs, f'{args.model}_{mode}')
        os.makedirs(run_dir, exist_ok=True)
        path = write_yaml(os.path.join(run_dir, 'train.yml'), opt)
        print(f'== {name}: python realsr/train.py -opt {path}', flush=True)
        start = time.perf_counter()
        model = None
        try:
            os.chdir(run_dir)
            model = train.main(['-opt', path])
            note = verify(model, opt, mode, args.device)
            record(args.results, name, 'PASS', time.perf_counter() - start, note)
        except (Exception, SystemExit) as err:  # noqa: BLE001 - every mode gets its line
            traceback.print_exc()
            record(args.results, name, 'FAIL', time.perf_counter() - start, first_line(err))
            failed = True
        finally:
            del model
            if args.device == 'cuda':
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            torch._dynamo.reset()
    return 1 if failed else 0


def cmd_degradation(args):
    """The Real-ESRGAN and DASR degradations on the device, drawn from a device generator."""
    import torch
    from realsr.degradations.dasr_spaces import DASRDegradation
    from realsr.degradations.pipeline import OFFICIAL_KERNEL_OPT, SecondOrderDegradation
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    low = torch.rand(4, 3, 6, 6, generator=g)
    gt = torch.nn.functional.interpolate(low, size=(96, 96), mode='bicubic', align_corners=False).clamp(0, 1)
    gt = gt.to(device)
    notes = []
    dasr_opt = _load('train_DASR_x4.yml')
    for label, module in (
            ('second-order', SecondOrderDegradation({'scale': 4}, OFFICIAL_KERNEL_OPT, 4)),
            ('DASR', DASRDegradation(dasr_opt, dasr_opt['datasets']['train'], 4))):
        module = module.to(device)

        def run(seed):
            gen = torch.Generator(device=device).manual_seed(seed)
            out = module(gt, gen)
            lq = out[0] if isinstance(out, tuple) else out
            assert gen.device.type == device.type
            return lq, out

        lq1, out1 = run(1)
        lq2, _ = run(1)
        lq3, _ = run(2)
        assert lq1.device.type == device.type, f'{label}: the LQ is on {lq1.device}'
        assert lq1.shape[:2] == (4, 3) and lq1.shape[-1] <= 96 // 4 + 1, f'{label}: LQ shape {tuple(lq1.shape)}'
        assert torch.equal(lq1, lq2), f'{label}: the same seed gave different LQs'
        assert not torch.equal(lq1, lq3), f'{label}: different seeds gave the same LQ'
        assert lq1.min() >= 0 and lq1.max() <= 1, f'{label}: LQ outside [0, 1]'
        assert torch.equal(lq1, (lq1 * 255).round() / 255), f'{label}: LQ not quantised to 8 bits'
        if isinstance(out1, tuple):
            assert torch.isfinite(out1[1]).all(), f'{label}: non-finite degradation parameters'
        notes.append(f'{label} {tuple(lq1.shape)}')
    print('; '.join(notes))
    return 0


def cmd_compile_grads(args):
    """torch.compile must not change the gradients: one backward of small networks under autocast,
    eager and compiled (the same weights and input); every parameter that gets a gradient eagerly
    gets it compiled, and the whole gradient agrees to a few percent."""
    import torch
    from realsr.archs import build_network
    device = torch.device(args.device)
    nets = {
        'RRDBNet': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 1,
                    'num_grow_ch': 8},
        'MSRResNet': {'type': 'MSRResNet', 'num_feat': 16, 'num_block': 2, 'upscale': 4},
        'SwinIR': {'type': 'SwinIR', 'upscale': 4, 'img_size': 16, 'window_size': 8, 'embed_dim': 24, 'depths': [2],
                   'num_heads': [2], 'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect'},
    }
    if device.type != 'cuda':
        del nets['SwinIR']  # a third C++ compilation would double the dry run's time
    # On a CPU realsr does not compile under bf16 autocast (Inductor drops RRDBNet's trunk
    # gradients there, torch 2.13): the CPU check is fp32, the GPU check bf16 and fp16.
    dtypes = [torch.bfloat16, torch.float16] if device.type == 'cuda' else [torch.float32]
    failed = []
    for name, net_opt in nets.items():
        torch.manual_seed(0)
        net = build_network(net_opt).to(device).train()
        x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(device)
        for dtype in dtypes:
            if dtype == torch.float16 and name != 'RRDBNet':  # one fp16 compile is enough (time)
                continue

            def grads(module):
                net.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=dtype):
                    out = module(x)
                out.float().abs().mean().backward()
                return {n: p.grad.detach().float().clone() for n, p in net.named_parameters() if p.grad is not None}

            eager = grads(net)
            torch._dynamo.reset()
            compiled = grads(torch.compile(net))
            lost = [n for n, g in eager.items()
                    if g.abs().sum() > 0 and (n not in compiled or compiled[n].abs().sum() == 0)]
            flat_e = torch.cat([g.flatten() for g in eager.values()])
            flat_c = torch.cat([compiled.get(n, torch.zeros_like(g)).flatten() for n, g in eager.items()])
            rel = float((flat_c - flat_e).norm() / flat_e.norm())
            label = f"{name}/{str(dtype).replace('torch.', '')}"
            print(f'{label}: relative gradient difference compiled vs eager {rel:.2e}; parameters without a '
                  f'gradient when compiled: {len(lost)} of {len(eager)} {lost[:3]}', flush=True)
            if lost or rel > 0.05:
                failed.append(f'{label} ({len(lost)}/{len(eager)} grads zero, rel diff {rel:.2g})')
    if failed:
        print('compiled gradients differ: ' + '; '.join(failed))
        return 1
    print('compiled gradients match eager: ' + ', '.join(nets))
    return 0


def cmd_ddp_yaml(args):
    """SRModel under DDP: accum_iter 2 (no_sync), mixed precision (fp16 on CUDA), channels_last, EMA."""
    opt = options('SRModel', args.device, args.data, args.batch, args.gt_size, args.iters)
    opt['name'] = 'check_ddp'
    opt['datasets']['train']['accum_iter'] = 2
    opt.update(use_amp=True, amp_bf16=args.device != 'cuda', use_channels_last=True)
    # the option file's dist_params.backend is honoured: nccl on a GPU, gloo for the CPU dry run
    opt.setdefault('dist_params', {})['backend'] = 'nccl' if args.device == 'cuda' else 'gloo'
    print(write_yaml(args.out, opt))
    return 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('data')
    p.add_argument('root')
    p = sub.add_parser('train')
    p.add_argument('--model', required=True)
    p.add_argument('--modes', nargs='+', required=True)
    p.add_argument('--device', required=True)
    p.add_argument('--data', required=True)
    p.add_argument('--runs', required=True)
    p.add_argument('--results', required=True)
    p.add_argument('--batch', type=int, required=True)
    p.add_argument('--gt-size', type=int, required=True)
    p.add_argument('--iters', type=int, required=True)
    p.add_argument('--compile', default='all', help="the models whose compile mode runs, or 'all'")
    p = sub.add_parser('degradation')
    p.add_argument('--device', required=True)
    p = sub.add_parser('compile-grads')
    p.add_argument('--device', required=True)
    p = sub.add_parser('ddp-yaml')
    p.add_argument('--device', required=True)
    p.add_argument('--data', required=True)
    p.add_argument('--batch', type=int, required=True)
    p.add_argument('--gt-size', type=int, required=True)
    p.add_argument('--iters', type=int, required=True)
    p.add_argument('--out', required=True)
    args = parser.parse_args()
    if args.cmd == 'data':
        write_data(args.root)
        return 0
    return {'train': cmd_train, 'degradation': cmd_degradation, 'compile-grads': cmd_compile_grads,
            'ddp-yaml': cmd_ddp_yaml}[args.cmd](args)


if __name__ == '__main__':
    sys.exit(main())
PYEOF

if [ "$DEVICE" = cuda ]; then
  BATCH=4
  GT_SIZE=64
  ITERS=4
  TRAIN_LIMIT=200
  BENCH_TRAIN_ARGS=(--device cuda --archs MSRResNet --steps 10 --rounds 2 --warmup 2 --batch 16 --lq-size 64)
  BENCH_DEG_ARGS=(--devices cuda --iters 3 --batch 4 --crop-pad 256 --gt-size 128)
else
  BATCH=2
  GT_SIZE=32
  ITERS=2
  TRAIN_LIMIT=600
  BENCH_TRAIN_ARGS=(--device cpu --archs MSRResNet --settings fp32 bf16 --steps 1 --rounds 1 --warmup 1 --batch 2
                    --lq-size 16)
  BENCH_DEG_ARGS=(--devices cpu --iters 1 --batch 2 --crop-pad 128 --gt-size 64)
fi

# -- checks ---------------------------------------------------------------------------------
if run_check "env" 120 "$PYTHON" -c "
import sys, torch
sys.path.insert(0, '$REPO')
import realsr
from realsr.runtime.train_step import bf16_is_fast
d = '$DEVICE'
if d == 'cuda':
    where = f'{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}'
else:
    where = f'CPU, {torch.get_num_threads()} threads'
print(f'torch {torch.__version__}, {where}, fast bf16: {bf16_is_fast(d)}')
"; then
  record env PASS "$CHECK_SECONDS" "$(tail -n 1 "$CHECK_LOG")"
else
  record env FAIL "$CHECK_SECONDS" "$CHECK_NOTE"
fi

if run_check "data" 120 "$PYTHON" "$WORK/checks.py" data "$WORK/data"; then
  record "data (tiny datasets, random VGG19)" PASS "$CHECK_SECONDS" "$WORK/data"
else
  record "data (tiny datasets, random VGG19)" FAIL "$CHECK_SECONDS" "$CHECK_NOTE"
fi

if run_check "degradation/$DEVICE" 120 "$PYTHON" "$WORK/checks.py" degradation --device "$DEVICE"; then
  record "degradation/$DEVICE (device generator)" PASS "$CHECK_SECONDS" "$(tail -n 1 "$CHECK_LOG")"
else
  record "degradation/$DEVICE (device generator)" FAIL "$CHECK_SECONDS" "$CHECK_NOTE"
fi

if run_check "compile gradients" 240 "$PYTHON" "$WORK/checks.py" compile-grads --device "$DEVICE"; then
  record "compile gradients = eager" PASS "$CHECK_SECONDS" "$(tail -n 1 "$CHECK_LOG")"
elif [ -z "$CHECK_NOTE" ] || [ "${CHECK_NOTE#exit 1:}" != "$CHECK_NOTE" ]; then
  record "compile gradients = eager" FAIL "$CHECK_SECONDS" "$(tail -n 1 "$CHECK_LOG" | cut -c1-160)"
else
  record "compile gradients = eager" FAIL "$CHECK_SECONDS" "$CHECK_NOTE"
fi

for model in $MODELS; do
  # shellcheck disable=SC2086  # MODES is a word list
  run_check "train $model" "$TRAIN_LIMIT" "$PYTHON" "$WORK/checks.py" train --model "$model" --modes $MODES \
    --device "$DEVICE" --data "$WORK/data" --runs "$WORK/runs" --results "$RESULTS" --batch "$BATCH" \
    --gt-size "$GT_SIZE" --iters "$ITERS" --compile "$COMPILE"
  # every mode records its own line; a process that died (or timed out) before all did is a FAIL
  reported=$(awk -F'\t' -v m="train $model/" 'index($1, m) == 1' "$RESULTS" | wc -l)
  wanted=$(echo $MODES | wc -w)
  if [ "$reported" -lt "$wanted" ]; then
    record "train $model (process)" FAIL "$CHECK_SECONDS" "$reported of $wanted modes reported; ${CHECK_NOTE:-}"
  fi
done

DDP_NAME="ddp torchrun x1 ($([ "$DEVICE" = cuda ] && echo nccl || echo gloo))"
DDP_DIR=$WORK/runs/ddp
mkdir -p "$DDP_DIR"
if ! "$PYTHON" "$WORK/checks.py" ddp-yaml --device "$DEVICE" --data "$WORK/data" --batch "$BATCH" \
     --gt-size "$GT_SIZE" --iters "$ITERS" --out "$DDP_DIR/train.yml" >"$LOGS/ddp_yaml.log" 2>&1; then
  record "$DDP_NAME" FAIL 0 "could not write its option file: $(error_line "$LOGS/ddp_yaml.log")"
else
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  pushd "$DDP_DIR" >/dev/null || exit 2
  if run_check "$DDP_NAME" 180 "$PYTHON" -m torch.distributed.run --nproc_per_node=1 --master_port="$PORT" \
       "$REPO/realsr/train.py" -opt "$DDP_DIR/train.yml" --launcher pytorch; then
    if ! grep -q 'World size (gpu number): 1' "$CHECK_LOG"; then
      record "$DDP_NAME" FAIL "$CHECK_SECONDS" "no 'World size (gpu number): 1' in the log; log: $CHECK_LOG"
    elif [ ! -f "$DDP_DIR/experiments/check_ddp/models/net_g_latest.pth" ]; then
      record "$DDP_NAME" FAIL "$CHECK_SECONDS" "no net_g_latest.pth written; log: $CHECK_LOG"
    else
      record "$DDP_NAME" PASS "$CHECK_SECONDS" \
        "accum_iter 2 (no_sync), $([ "$DEVICE" = cuda ] && echo fp16 || echo bf16) + channels_last, EMA"
    fi
  else
    record "$DDP_NAME" FAIL "$CHECK_SECONDS" "$CHECK_NOTE"
  fi
  popd >/dev/null || exit 2
fi

if run_check "bench_degradation" 180 "$PYTHON" "$REPO/scripts/bench_degradation.py" "${BENCH_DEG_ARGS[@]}"; then
  record bench_degradation PASS "$CHECK_SECONDS" "table below"
else
  record bench_degradation FAIL "$CHECK_SECONDS" "$CHECK_NOTE"
fi
BENCH_DEG_LOG=$CHECK_LOG

if run_check "bench_train" 240 "$PYTHON" "$REPO/scripts/bench_train.py" "${BENCH_TRAIN_ARGS[@]}" \
     --out "$WORK/bench_train.md"; then
  if grep -q 'FAILED' "$CHECK_LOG"; then
    record bench_train FAIL "$CHECK_SECONDS" "a setting failed: $(grep FAILED "$CHECK_LOG" | head -n 1 | cut -c1-120)"
  else
    record bench_train PASS "$CHECK_SECONDS" "table below"
  fi
else
  record bench_train FAIL "$CHECK_SECONDS" "$CHECK_NOTE"
fi
BENCH_TRAIN_LOG=$CHECK_LOG

# Which scaled_dot_product_attention kernel SwinIR/DRCT's window attention gets (64 windows, 6
# heads, 64 tokens): with the learned relative-position bias in the mask (training), the mask
# detached (inference), a bool mask, no mask; head dim 30 (SwinIR-M) and 32 (padded).
cat >"$WORK/sdpa_kernels.py" <<'PY'
import sys
import time

import torch
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

device = torch.device(sys.argv[1])
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
dtypes = [torch.float32] + ([torch.bfloat16, torch.float16] if device.type == 'cuda' else [])
print(f"{'dtype':9} {'head':>4} {'mask':22} {'ms':>7}  kernels")
picked = {}
for dtype in dtypes:
    for head in (30, 32):
        q = torch.rand(64, 6, 64, head, device=device, dtype=dtype, requires_grad=True)
        masks = {'learned bias (train)': torch.zeros(1, 6, 64, 64, device=device, dtype=dtype, requires_grad=True),
                 'detached float (eval)': torch.zeros(1, 6, 64, 64, device=device, dtype=dtype),
                 'bool': torch.ones(1, 6, 64, 64, device=device, dtype=torch.bool), 'none': None}
        for name, mask in masks.items():
            def run():
                F.scaled_dot_product_attention(q, q, q, attn_mask=mask).float().sum().backward()
            run()
            with profile(activities=activities) as prof:
                run()
            kernels = sorted({e.key for e in prof.key_averages() if 'dot_product' in e.key and 'backward' not in e.key
                              and e.key != 'aten::scaled_dot_product_attention'})
            if device.type == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(10):
                run()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            ms = (time.perf_counter() - start) / 10 * 1000
            print(f'{str(dtype)[6:]:9} {head:>4} {name:22} {ms:7.2f}  {", ".join(kernels)}')
            picked.setdefault(name, kernels)
print('; '.join(f"{name}: {', '.join(k.replace('aten::_scaled_dot_product_', '') for k in kernels)}"
                for name, kernels in picked.items()))
PY
if run_check "sdpa kernels" 120 "$PYTHON" "$WORK/sdpa_kernels.py" "$DEVICE"; then
  record "sdpa kernels" PASS "$CHECK_SECONDS" "$(tail -n 1 "$CHECK_LOG" | cut -c1-160)"
else
  record "sdpa kernels" FAIL "$CHECK_SECONDS" "$CHECK_NOTE"
fi
SDPA_LOG=$CHECK_LOG

# -- summary ----------------------------------------------------------------------------------
TOTAL=$(elapsed "$START")
echo
echo "== gpu_check summary ($DEVICE, $TOTAL s) =="
awk -F'\t' 'BEGIN { printf "%-40s %-6s %8s  %s\n", "check", "result", "seconds", "note" }
            { printf "%-40s %-6s %8s  %s\n", $1, $2, $3, $4 }' "$RESULTS"
PASSES=$(awk -F'\t' '$2 == "PASS"' "$RESULTS" | wc -l)
FAILS=$(awk -F'\t' '$2 == "FAIL"' "$RESULTS" | wc -l)
SKIPS=$(awk -F'\t' '$2 == "SKIP"' "$RESULTS" | wc -l)
echo "== $PASSES passed, $FAILS failed, $SKIPS skipped in $TOTAL s =="

echo
echo "== scripts/bench_degradation.py ${BENCH_DEG_ARGS[*]} =="
if [ -f "$BENCH_DEG_LOG" ]; then grep -v '^\[W' "$BENCH_DEG_LOG" | tail -n 20; else echo "(not run)"; fi
echo
echo "== attention kernels (scaled_dot_product_attention, SwinIR's window shapes) =="
if [ -f "$SDPA_LOG" ]; then grep -v -e '^\[W' -e '^USDT' "$SDPA_LOG" | tail -n 30; else echo "(not run)"; fi
echo
echo "== scripts/bench_train.py ${BENCH_TRAIN_ARGS[*]} =="
if [ -f "$WORK/bench_train.md" ]; then
  cat "$WORK/bench_train.md"
elif [ -f "$BENCH_TRAIN_LOG" ]; then
  tail -n 20 "$BENCH_TRAIN_LOG"
else
  echo "(not run)"
fi

if [ "$FAILS" -gt 0 ]; then
  echo
  echo "gpu_check: $FAILS check(s) FAILED; logs and generated option files in $WORK"
  exit 1
fi
if [ "${REALSR_GPU_CHECK_KEEP:-0}" = 1 ]; then
  echo "gpu_check: work folder kept: $WORK"
else
  rm -rf "$WORK"
fi
exit 0
