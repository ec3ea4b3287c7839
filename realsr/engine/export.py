"""ONNX export of a trained network (the logic behind ``realsr/export.py`` / ``realsr-export``).

The network comes as for ``realsr-infer``: ``--model X`` alone (arch from safetensors metadata or
detected, :mod:`realsr.engine.auto_model`), ``--arch NAME --model X``, or ``--opt`` (a test option
file). The graph takes ``input`` (N, C, H, W) in [0, 1] and gives ``output`` (N, C, sH, sW), with
dynamic batch, height and width. It is exported with the TorchScript exporter (``dynamo=False``),
which keeps the symbolic sizes of the window archs' padding and shift masks.

* Archs that need their input to be a multiple (window archs: SwinIR, DRCT, HAT; RRDBNet x2/x1's
  pixel-unshuffle) are exported inside :class:`PadCropWrapper`: reflect-pad to the multiple,
  run, crop -- as :func:`realsr.utils.tiling.padded_forward` does at test time.
* Shift masks are built from the traced size inside the graph (:func:`traceable_shift_masks`),
  never baked in for the export size.
* DASR / CDDNet export the predictor-conditioned net (generator + degradation predictor).
* After the export, onnxruntime runs the file on two input sizes (one not a multiple of anything)
  and the largest absolute difference to PyTorch is printed; ``--fp16`` exports half precision
  (verified where onnxruntime's CPU kernels take it; otherwise the reason is printed).
"""
import argparse
import contextlib
import os
import sys
import types

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from realsr.engine import inference
from realsr.utils.tiling import size_multiple

ONNX_PIP = "pip install 'realsr[onnx]'  (onnx and onnxruntime)"


class ExportError(Exception):
    """A set-up or export error reported as one message (exit status 2)."""


class PadCropWrapper(nn.Module):
    """Reflect-pad bottom/right to ``multiple`` (always, by ``(-size) mod multiple``, so the pad is
    symbolic in the graph), run ``net``, crop to ``scale x`` the input. Inputs must be larger than
    the pad (reflect padding), as at test time."""

    def __init__(self, net, multiple, scale):
        super().__init__()
        self.net, self.multiple, self.scale = net, int(multiple), int(scale)

    def forward(self, x):
        h, w = x.shape[-2:]
        m = self.multiple
        x = F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m), mode='reflect')
        return self.net(x)[:, :, :h * self.scale, :w * self.scale]


def _shift_mask_graph(h, w, window_size, shift_size, device):
    """:func:`realsr.archs.swinir_arch.shift_region_mask` from (traced) sizes: comparisons instead of
    slice assignments, so the exporter records the arithmetic, not the numbers."""
    from realsr.archs.swinir_arch import window_partition

    def labels(length):
        index = torch.arange(length, device=device)
        return (index >= length - window_size).to(torch.int64) + (index >= length - shift_size).to(torch.int64)

    region = labels(h)[:, None] * 3 + labels(w)[None, :]
    region = window_partition(region[None, :, :, None], window_size).flatten(1)
    return region[:, None, :] != region[:, :, None]


@contextlib.contextmanager
def traceable_shift_masks(net):
    """While exporting: every shift mask of ``net`` is computed in the graph from the input size
    (Swin blocks skip their construction-size buffer; mask caches build instead of caching)."""
    from realsr.archs.swinir_arch import ShiftMaskCache, SwinTransformerBlock

    def block_mask(block, x_size, device):
        if block.shift_size == 0:
            return None
        return _shift_mask_graph(x_size[0], x_size[1], block.window_size, block.shift_size, device)

    def cache_get(cache, h, w, window_size, shift_size, device):
        return _shift_mask_graph(h, w, window_size, shift_size, device)

    patched = []
    for m in net.modules():
        if isinstance(m, SwinTransformerBlock):
            m.mask_for = types.MethodType(block_mask, m)
            patched.append((m, 'mask_for'))
        cache = getattr(m, 'mask_cache', None)
        if isinstance(cache, ShiftMaskCache) and 'get' not in vars(cache):
            cache.get = types.MethodType(cache_get, cache)
            patched.append((cache, 'get'))
    try:
        yield net
    finally:
        for obj, name in patched:
            vars(obj).pop(name, None)


def _dynamic_conv_graph(conv, x, weights):
    """DASR's per-sample (expert-mixed) convolution as unfold + batched matmul: the same sums as its
    grouped convolution over the batch, but with no kernel whose shape depends on the batch size
    (ONNX needs a known kernel shape)."""
    b, c, h, w = x.shape
    k, p, s, d = conv.kernel_size, conv.padding, conv.stride, conv.dilation
    weights = weights.to(conv.weight.dtype)
    kernel = (weights @ conv.weight.reshape(conv.K, -1)).reshape(b, conv.out_planes, c * k * k)
    cols = F.unfold(x, k, dilation=d, padding=p, stride=s)  # (b, c*k*k, L)
    out = torch.bmm(kernel, cols)
    if conv.bias is not None:
        out = out + (weights @ conv.bias).unsqueeze(-1)
    out_h = (h + 2 * p - d * (k - 1) - 1) // s + 1
    out_w = (w + 2 * p - d * (k - 1) - 1) // s + 1
    return out.reshape(b, conv.out_planes, out_h, out_w)


@contextlib.contextmanager
def traceable_dynamic_convs(net):
    """While exporting: DASR / CDDNet's dynamic convolutions run as :func:`_dynamic_conv_graph`."""
    from realsr.archs.dasr_arch import Dynamic_conv2d
    patched = []
    for m in net.modules():
        if isinstance(m, Dynamic_conv2d):
            if m.groups != 1:
                raise ExportError(f'a Dynamic_conv2d with groups={m.groups} cannot be exported (only groups=1)')
            m.forward = types.MethodType(_dynamic_conv_graph, m)
            patched.append(m)
    try:
        yield net
    finally:
        for m in patched:
            vars(m).pop('forward', None)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ExportError(f'ONNX export needs onnx and onnxruntime ({err.name} is missing): {ONNX_PIP}') from None


def exportable(net, sample):
    """``(module to export, multiple, scale)``: ``net`` wrapped to pad and crop when it needs a multiple."""
    if getattr(net, 'model', None) is not None and hasattr(net, 'arch_name'):  # spandrel's model
        raise ExportError(f'{net.arch_name} (loaded through spandrel) is not exported by realsr: export it with '
                          'spandrel / chaiNNer, or use a realsr arch')
    multiple = size_multiple(net)
    with torch.no_grad():
        h, w = sample.shape[-2:]
        probe = F.pad(sample, (0, (-w) % multiple, 0, (-h) % multiple), mode='reflect') if multiple > 1 else sample
        scale = net(probe).shape[-1] // probe.shape[-1]
    # eval: the exporter restores the wrapper's mode afterwards, recursively (a fresh module trains)
    return (PadCropWrapper(net, multiple, scale).eval() if multiple > 1 else net), multiple, scale


def export_onnx(net, path, opset=17, fp16=False, sample_size=None, channels=3):
    """Write ``net`` (eval mode, on the CPU) to ``path``; returns ``(module exported, multiple, scale)``.
    Written to a temporary name in the same folder and renamed, so a failed export leaves no file."""
    _require_onnx()
    net = net.eval()
    multiple = size_multiple(net)
    side = sample_size or max(16, 2 * multiple) + 3  # not a multiple: the traced pad is not 0
    sample = torch.rand(1, channels, side, side + 2, generator=torch.Generator().manual_seed(0))
    module, multiple, scale = exportable(net, sample)
    dtype = torch.float16 if fp16 else torch.float32
    module = module.to(dtype)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
    try:
        with traceable_shift_masks(module), traceable_dynamic_convs(module), _quiet_tracer():
            torch.onnx.export(module, (sample.to(dtype),), tmp, dynamo=False, opset_version=opset,
                              input_names=['input'], output_names=['output'],
                              dynamic_axes={'input': {0: 'batch', 2: 'height', 3: 'width'},
                                            'output': {0: 'batch', 2: 'out_height', 3: 'out_width'}})
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f'{_arch_name(net)} cannot be exported to ONNX (opset {opset}): '
                          f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}') from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return module, multiple, scale


@contextlib.contextmanager
def _quiet_tracer():
    import warnings
    with warnings.catch_warnings():
        # the tracer warns about every Python int taken from a size; the sizes that matter are symbolic
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export.*')
        yield


def _arch_name(net):
    inner = getattr(net, 'net_g', net)
    return type(inner).__name__


def verify(path, module, sizes, fp16=False, channels=3):
    """Run the ONNX file with onnxruntime (CPU) and ``module`` with PyTorch on each ``(n, h, w)``;
    returns ``[(size, max_abs_diff)]``. Raises :class:`ExportError` when onnxruntime cannot run it."""
    import onnxruntime as ort
    try:
        session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    except Exception as err:
        raise ExportError(f'onnxruntime cannot load {path!r}: {type(err).__name__}: {err}') from err
    dtype = torch.float16 if fp16 else torch.float32
    results = []
    g = torch.Generator().manual_seed(1)
    for n, h, w in sizes:
        x = torch.rand(n, channels, h, w, generator=g).to(dtype)
        with torch.no_grad():
            expected = module(x).float().numpy()
        try:
            got = session.run(None, {'input': x.numpy()})[0]
        except Exception as err:
            raise ExportError(f'onnxruntime cannot run {path!r} on {n}x{channels}x{h}x{w}: '
                              f'{type(err).__name__}: {err}') from err
        if got.shape != expected.shape:
            raise ExportError(f'{path!r}: output {got.shape} for input {(n, channels, h, w)}, PyTorch gives '
                              f'{expected.shape}')
        results.append(((n, h, w), float(np.abs(got.astype(np.float32) - expected).max())))
    return results


def default_sizes(multiple):
    """Two verification sizes: a multiple of ``multiple`` (batch 1) and one that is not (batch 2)."""
    base = max(16, 2 * multiple)
    return [(1, base, base), (2, base + 3, base + 7 if multiple != 7 else base + 5)]


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(
        prog='realsr-export',
        description='Export a trained network to ONNX (dynamic batch/height/width) and verify it with '
                    'onnxruntime: --model X [--opt Y | --arch Z] -o out.onnx [--fp16] [--opset N].')
    p.add_argument('--model', help='checkpoint (.pth or .safetensors); alone, its arch is detected')
    p.add_argument('--opt', '-opt', help='test option file (network_g, path.pretrain_network_g)')
    p.add_argument('--arch', help='a registered arch name (with --model)')
    p.add_argument('--net-opt', action='append', metavar='KEY=VALUE', help='arch constructor argument, repeatable')
    p.add_argument('--param-key', help='checkpoint key (default params_ema, then params, then a bare state dict)')
    p.add_argument('--predictor', help='degradation predictor checkpoint for DASR / CDDNet generators')
    p.add_argument('-o', '--output', required=True, help='the .onnx file to write')
    p.add_argument('--fp16', action='store_true', help='half-precision weights and input/output')
    p.add_argument('--opset', type=int, default=17, help='ONNX opset (default 17)')
    p.add_argument('--no-verify', action='store_true', help='skip the onnxruntime check')
    return p


def run(args):
    _require_onnx()
    if args.opset < 11:
        raise ExportError(f'--opset {args.opset}: use 11 or newer (reflect padding and dynamic shapes)')
    try:
        net_opt, model_path, param_key, strict, _ = inference.network_options(args)
        net = inference.build_model(net_opt, model_path, param_key, strict)
        if inference.needs_predictor(net):
            net = inference.attach_predictor(net, args.predictor, getattr(args, 'predictor_opt', None))
    except inference.InferenceError as err:
        raise ExportError(str(err)) from None
    net = net.float().eval()
    module, multiple, scale = export_onnx(net, args.output, opset=args.opset, fp16=args.fp16)
    size_mb = os.path.getsize(args.output) / 2**20
    what = f'{_arch_name(net)} x{scale}' + (f', padded to a multiple of {multiple}' if multiple > 1 else '')
    print(f'realsr-export: wrote {args.output} ({what}, opset {args.opset}, '
          f"{'fp16' if args.fp16 else 'fp32'}, {size_mb:.1f} MiB)")
    if args.no_verify:
        return 0
    try:
        results = verify(args.output, module, default_sizes(multiple), fp16=args.fp16)
    except ExportError as err:
        if not args.fp16:
            raise
        print(f'realsr-export: fp16 not verified: {err}', file=sys.stderr)
        return 0
    for (n, h, w), diff in results:
        print(f'realsr-export: onnxruntime vs PyTorch on {n}x{h}x{w}: max abs difference {diff:.3g}')
    return 0


def main(argv=None):
    from realsr.option_schema import OptionError
    args = build_parser().parse_args(argv)
    args.input = None
    try:
        return run(args)
    except (ExportError, OptionError) as err:
        print(f'realsr-export: error: {err}', file=sys.stderr)
        sys.exit(2)
