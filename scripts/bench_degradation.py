"""Benchmark: LQ training pairs per second of the second-order degradation at the official
Real-ESRGAN settings (batch 12, crop/pad 400, GT patch 256, x4), on the CPU and, when present,
on the GPU, for

  (a) realsr: kernels synthesised batched on the device, then the pipeline;
  (b) the reference split, as a baseline measured in the same run: the three kernels of each
      sample drawn with numpy/scipy on the CPU one sample at a time (as Real-ESRGAN's dataset
      workers do), then the same device ops.

It prints both rates and their ratio, and on a GPU also the pipeline's time as a share of one
RRDBNet x4 training step (forward, backward, Adam) at the same batch.

    python scripts/bench_degradation.py [--iters 20] [--devices cpu cuda] [--no-rrdb]
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

try:
    import realsr  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.degradations.kernels import sample_reference_kernels  # noqa: E402
from realsr.degradations.pipeline import (OFFICIAL_KERNEL_OPT, SecondOrderDegradation,  # noqa: E402
                                          paired_random_crop_batch)

KERNEL_OPT = OFFICIAL_KERNEL_OPT  # train_realesrnet_x4plus.yml, datasets.train


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def photo_like_batch(batch, size, device, seed=0):
    """Smooth random images with texture (the Poisson path depends on the number of levels)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, size // 16, size // 16, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode='bicubic', align_corners=False)
    img = img + 0.05 * torch.randn(batch, 3, size, size, generator=g)
    return img.clamp(0, 1).to(device)


def reference_kernels(batch, device, rng):
    triples = [sample_reference_kernels(KERNEL_OPT, rng) for _ in range(batch)]
    return {name: torch.from_numpy(np.stack([t[i] for t in triples])).to(device)
            for i, name in enumerate(('kernel1', 'kernel2', 'sinc_kernel'))}


def time_it(fn, iters, device, warmup=2):
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def rrdb_step_time(batch, lq_size, device, iters):
    from realsr.registry import ARCH_REGISTRY
    net = ARCH_REGISTRY.get('RRDBNet')(3, 3, scale=4, num_feat=64, num_block=23, num_grow_ch=32).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    lq = torch.rand(batch, 3, lq_size, lq_size, device=device)
    gt = torch.rand(batch, 3, lq_size * 4, lq_size * 4, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.l1_loss(net(lq), gt).backward()
        opt.step()

    return time_it(step, iters, device, warmup=3)


def bench(device, args):
    opt = {'scale': args.scale}
    pipeline = SecondOrderDegradation(opt, KERNEL_OPT, args.scale).to(device)
    gt = photo_like_batch(args.batch, args.crop_pad, device)
    # Both variants see the same per-batch choices (resize factors and modes, noise types, final
    # order): the ops generator is reseeded with the batch number before every batch, since the
    # choices are drawn first (Poisson sampling then consumes a data-dependent amount of it).
    # Only where the kernels come from differs.
    g_ops = torch.Generator(device=device)
    g_kernels = torch.Generator(device=device).manual_seed(1)
    rng = np.random.default_rng(0)
    batch_number = [0]

    def next_ops_generator():
        batch_number[0] += 1
        return g_ops.manual_seed(batch_number[0])

    def ours():
        kernels = pipeline.kernels.sample(args.batch, g_kernels, device)
        g = next_ops_generator()
        lq = pipeline(gt, g, kernels=kernels)
        paired_random_crop_batch([gt], lq, args.gt_size, args.scale, g)

    def reference_split():
        kernels = reference_kernels(args.batch, device, rng)
        g = next_ops_generator()
        lq = pipeline(gt, g, kernels=kernels)
        paired_random_crop_batch([gt], lq, args.gt_size, args.scale, g)

    def timed(fn):
        batch_number[0] = 0
        return time_it(fn, args.iters, device)

    t_ours = timed(ours)
    t_ref = timed(reference_split)
    print(f'[{device}] batch {args.batch}, crop/pad {args.crop_pad}, GT {args.gt_size}, x{args.scale}, '
          f'{args.iters} batches each')
    print(f'  (a) realsr, kernels on the device:  {args.batch / t_ours:8.1f} pairs/s  ({t_ours * 1e3:7.1f} ms/batch)')
    print(f'  (b) reference split (numpy kernels): {args.batch / t_ref:8.1f} pairs/s  ({t_ref * 1e3:7.1f} ms/batch)')
    print(f'  ratio (a)/(b): {t_ref / t_ours:.2f}x')
    if device.type == 'cuda' and not args.no_rrdb:
        t_step = rrdb_step_time(args.batch, args.gt_size // args.scale, device, max(args.iters // 2, 5))
        print(f'  RRDBNet x4 training step at batch {args.batch}: {t_step * 1e3:.1f} ms; '
              f'degradation = {100 * t_ours / t_step:.1f}% of it')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, default=12)
    parser.add_argument('--crop-pad', type=int, default=400)
    parser.add_argument('--gt-size', type=int, default=256)
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--devices', nargs='+', default=None, help='default: cpu, and cuda when present')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--no-rrdb', action='store_true', help='skip the RRDBNet step timing (GPU)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads'
          + (f', GPU: {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else ', no GPU'))
    for name in devices:
        bench(torch.device(name), args)


if __name__ == '__main__':
    main()
