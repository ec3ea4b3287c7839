"""Benchmark the archs: forward and forward+backward time and peak memory for SRResNet,
RRDBNet, SwinIR-M and DRCT at x4, for fp32 (and bf16 autocast on a GPU), with SwinIR's and
DRCT's window attention through ``scaled_dot_product_attention`` against the explicit softmax
path measured in the same run (ratio printed).

    python scripts/bench_archs.py [--batch 4] [--size 64] [--iters 10] [--archs SRResNet RRDBNet SwinIR-M DRCT]

Defaults are the issue's settings (batch 4, LR 64x64); on a CPU use smaller ones.
"""
import argparse
import os
import resource
import sys
import time

import torch

try:
    import realsr  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.archs import build_network  # noqa: E402

ARCHS = {  # full-size x4 configurations (the published models)
    'SRResNet': {'type': 'MSRResNet', 'num_feat': 64, 'num_block': 16, 'upscale': 4},
    'RRDBNet': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32},
    'SwinIR-M': {'type': 'SwinIR', 'upscale': 4, 'img_size': 64, 'window_size': 8, 'img_range': 1.0, 'embed_dim': 180,
                 'depths': [6] * 6, 'num_heads': [6] * 6, 'mlp_ratio': 2, 'upsampler': 'pixelshuffle',
                 'resi_connection': '1conv'},
    'DRCT': {'type': 'DRCT', 'upscale': 4, 'img_size': 64, 'window_size': 16, 'img_range': 1.0, 'embed_dim': 180,
             'depths': [6] * 6, 'num_heads': [6] * 6, 'mlp_ratio': 2, 'upsampler': 'pixelshuffle',
             'resi_connection': '1conv', 'gc': 32},
}


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def peak_mb(device):
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (CPU)


def measure(net, x, device, iters, backward, dtype):
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type,
                                                                                                 enabled=False)

    def step():
        if backward:
            net.zero_grad(set_to_none=True)
            with autocast:
                out = net(x)
            out.float().mean().backward()
        else:
            with torch.no_grad(), autocast:
                net(x)

    step()  # warm-up (also builds cached masks)
    sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return (time.perf_counter() - start) / iters * 1e3, peak_mb(device)


def set_attention(net, impl):
    """Switch every window-attention module between 'sdpa' and 'explicit'."""
    for module in net.modules():
        if hasattr(module, 'attn_impl'):
            module.attn_impl = impl


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--size', type=int, default=64, help='LR input side')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtypes = [('fp32', None)] + ([('bf16', torch.bfloat16)] if device.type == 'cuda' else [])
    print(f'torch {torch.__version__}, device {device}'
          + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else f', {torch.get_num_threads()} threads')
          + f'; batch {args.batch}, LR {args.size}x{args.size}, x4, {args.iters} iterations per cell')
    print(f"{'arch':10s} {'dtype':5s} {'attention':9s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'peak MB':>9s}")
    for name in args.archs:
        torch.manual_seed(0)
        net = build_network(ARCHS[name]).to(device).train()
        x = torch.rand(args.batch, 3, args.size, args.size, device=device)
        impls = ['sdpa', 'explicit'] if any(hasattr(m, 'attn_impl') for m in net.modules()) else ['-']
        for dname, dtype in dtypes:
            times = {}
            for impl in impls:
                if impl != '-':
                    set_attention(net, impl)
                fwd, _ = measure(net, x, device, args.iters, False, dtype)
                both, peak = measure(net, x, device, args.iters, True, dtype)
                times[impl] = (fwd, both)
                print(f'{name:10s} {dname:5s} {impl:9s} {fwd:9.1f} {both:11.1f} {peak:9.0f}')
            if len(times) == 2:
                print(f"{'':10s} {'':5s} {'ratio':9s} explicit/sdpa: fwd {times['explicit'][0] / times['sdpa'][0]:.2f}x, "
                      f"fwd+bwd {times['explicit'][1] / times['sdpa'][1]:.2f}x")


if __name__ == '__main__':
    main()
