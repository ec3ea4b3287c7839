"""Upscale image files with a trained network (the logic behind ``realsr/infer.py`` / ``realsr-infer``).

The network comes from a test option file (``--opt``: ``network_g``, ``path.pretrain_network_g``,
``path.param_key_g``) or from ``--arch NAME --model FILE`` (constructor arguments with
``--net-opt key=value``). Checkpoints are read in BasicSR's formats: ``params_ema`` is preferred,
then ``params``, then a bare state dict; loading is strict and a mismatch names the missing and
unexpected keys.

Per image (read unchanged, so 16-bit depth, grayscale and alpha survive):

* 8-bit images are scaled to [0, 1] by 255, 16-bit ones by 65535, and written back at the same depth;
* grayscale images run as 3 equal channels and are written back as 1 channel;
* an alpha channel is upscaled with bicubic (``--alpha-upsampler bicubic``, the default) or through
  the network as 3 equal channels (``net``) and written as an RGBA PNG;
* a JPEG's EXIF orientation is applied (the PNG output has no EXIF);
* sizes the arch cannot take (RRDBNet x2/x1 pixel-unshuffle, SwinIR windows) are reflect-padded to
  the needed multiple (``--pad-multiple``, inferred when not given) and the output is cropped;
* ``--tile N --tile-pad P`` runs overlapping tiles (:func:`realsr.utils.tiling.padded_forward`);
* DASR / CDDNet generators run with their degradation predictor (``network_p`` /
  ``path.pretrain_network_p`` of the option file, or ``--predictor FILE``), whose expert weights come
  from the whole image, tiled or not.

Outputs are ``<out>/<stem>_<suffix>.png``. An unreadable image is reported and skipped; the run
goes on and exits with status 1. Set-up errors (no model file, checkpoint/arch mismatch, unknown
arch, fp16 without CUDA) print one message and exit with status 2.
"""
import argparse
import inspect
import os
import sys

import cv2
import numpy as np
import torch

from realsr.archs import build_network
from realsr.runtime import checkpoint
from realsr.registry import ARCH_REGISTRY
from realsr.utils.img_util import ImageReadError, ImageWriteError, imfrombytes, imwrite
from realsr.utils.tiling import align_tile, padded_forward, size_multiple

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm', '.jp2')


class InferenceError(Exception):
    """A set-up error reported as one line (exit status 2) instead of a traceback."""


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def list_inputs(path):
    """``(files, skipped)``: a file is taken as given; a folder gives its image files (by
    extension, sorted, not recursive) and the names of the other files."""
    if os.path.isfile(path):
        return [path], []
    if not os.path.isdir(path):
        raise InferenceError(f'input {path!r} does not exist')
    files, skipped = [], []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            continue
        (files if name.lower().endswith(IMG_EXTENSIONS) else skipped).append(full)
    return files, skipped


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------
def _parse_value(text):
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def network_options(args):
    """``(network_opt, model_path, param_key, strict, scale)`` from ``--opt`` or ``--arch``."""
    if args.opt:
        from realsr.options import load_option_file
        opt = load_option_file(args.opt)
        if not isinstance(opt.get('network_g'), dict) or 'type' not in opt['network_g']:
            raise InferenceError(f'{args.opt!r} has no network_g section with a type')
        net_opt = dict(opt['network_g'])
        path_opt = opt.get('path') or {}
        model = args.model or path_opt.get('pretrain_network_g')
        param_key = path_opt.get('param_key_g') or 'params_ema'
        strict = path_opt.get('strict_load_g', True)
        scale = opt.get('scale')
        args.predictor_opt = opt.get('network_p')
        args.predictor = args.predictor or path_opt.get('pretrain_network_p')
    else:
        if not args.arch and not args.model:
            raise InferenceError('give --model <file> (its arch is detected), --arch <name> --model <file>, '
                                 'or --opt <test option file>')
        if not args.arch and args.net_opt:
            raise InferenceError('--net-opt needs --arch (without it the arguments come from the checkpoint)')
        net_opt = {'type': args.arch} if args.arch else None  # None: detect it from the checkpoint
        model, param_key, strict, scale = args.model, 'params_ema', True, None
    if args.arch and args.opt:
        net_opt['type'] = args.arch
    for entry in (args.net_opt or []) if net_opt is not None else []:
        if '=' not in entry:
            raise InferenceError(f'--net-opt {entry!r} must look like key=value')
        key, value = (s.strip() for s in entry.split('=', 1))
        net_opt[key] = _parse_value(value)
    if args.param_key:
        param_key = args.param_key
    if not model:
        raise InferenceError('no model file: give --model (or path.pretrain_network_g in the option file)')
    return net_opt, model, param_key, strict is not False, scale


def build_model(net_opt, model_path, param_key='params_ema', strict=True):
    """Build the arch and load the checkpoint; errors become :class:`InferenceError`. Without
    ``net_opt`` the arch comes from the checkpoint (:mod:`realsr.engine.auto_model`)."""
    if net_opt is None:
        return _build_detected(model_path, param_key)
    name = net_opt['type']
    try:
        cls = ARCH_REGISTRY.get(name)
    except KeyError as err:
        raise InferenceError(f'unknown arch: {err.args[0]}') from None
    net_opt = dict(net_opt)
    # --arch alone: fill required channel arguments with 3 (RGB in, RGB out).
    try:
        params = inspect.signature(cls.__init__).parameters
        for key in ('num_in_ch', 'num_out_ch'):
            if key in params and params[key].default is inspect.Parameter.empty and key not in net_opt:
                net_opt[key] = 3
    except (TypeError, ValueError):
        pass
    try:
        net = build_network(net_opt)
    except (TypeError, ValueError) as err:
        raise InferenceError(f'cannot build {name} with {net_opt}: {err}') from None
    if not os.path.isfile(model_path):
        raise InferenceError(f'model file {model_path!r} does not exist')
    try:
        checkpoint.load_network(net, model_path, strict=strict, param_key=param_key)
    except (RuntimeError, KeyError) as err:
        raise InferenceError(err.args[0] if err.args else str(err)) from None
    net.eval()
    return net


def _build_detected(model_path, param_key):
    from realsr.engine.auto_model import ModelNotRecognised, describe, load_auto
    if not os.path.isfile(model_path):
        raise InferenceError(f'model file {model_path!r} does not exist')
    try:
        net, net_opt, how = load_auto(model_path, param_key)
    except (ModelNotRecognised, RuntimeError, KeyError) as err:
        raise InferenceError(err.args[0] if err.args else str(err)) from None
    print(f'realsr-infer: {os.path.basename(model_path)}: {describe(net_opt) if net_opt else how}'
          + (f' ({how})' if net_opt else ''), file=sys.stderr)
    return net


def needs_predictor(net):
    """True for dynamic generators (DASR, CDDNet) whose forward takes the expert ``weights``."""
    try:
        return 'weights' in inspect.signature(net.forward).parameters
    except (TypeError, ValueError):
        return False


def attach_predictor(net_g, predictor_path, predictor_opt=None):
    """Wrap a dynamic generator with its degradation predictor (``network_p`` and its checkpoint;
    without ``network_p`` the predictor's arguments are read from the checkpoint)."""
    from realsr.archs.dasr_arch import PredictorConditionedNet
    name = type(net_g).__name__
    if not predictor_path:
        raise InferenceError(f'{name} takes its expert weights from a degradation predictor: give --predictor '
                             '<net_p .pth> (or network_p and path.pretrain_network_p in the option file)')
    net_p = build_model(dict(predictor_opt) if predictor_opt else None, predictor_path, 'params', True)
    experts = getattr(net_p, 'MappingNet', [None, None])[-1]
    if getattr(experts, 'out_features', None) not in (None, getattr(net_g, 'num_models', None)):
        raise InferenceError(f'the predictor {predictor_path!r} weighs {experts.out_features} experts, {name} has '
                             f'{net_g.num_models}')
    return PredictorConditionedNet(net_g, net_p).eval()


def infer_pad_multiple(net):
    """The multiple the input height/width must have (:func:`realsr.utils.tiling.size_multiple`)."""
    return size_multiple(net)


def resolve_device_dtype(device, half=False, bf16=False):
    if half and bf16:
        raise InferenceError('--half and --bf16 exclude each other')
    if device in (None, '', 'auto'):
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise InferenceError(f'--device {device!r}: {err}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise InferenceError(f'--device {device}: CUDA is not available on this machine; use --device cpu')
    # bf16 also runs on a CPU (fast where the CPU has bf16 units; it keeps float32's range, so it is
    # safe for any net). fp16 stays GPU-only: on a CPU it is slow and not every torch build has its kernels.
    if half and device.type != 'cuda':
        raise InferenceError(f'--half needs a CUDA device (running on {device}); use --bf16 for reduced '
                             'precision on a CPU, or drop --half to run in float32')
    if bf16 and device.type not in ('cuda', 'cpu'):
        raise InferenceError(f'--bf16 runs on a CUDA device or the CPU, not on {device}; drop --bf16 to run in float32')
    dtype = torch.float16 if half else torch.bfloat16 if bf16 else torch.float32
    return device, dtype


# ---------------------------------------------------------------------------------------------
# one image
# ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def upscale_rgb(net, img, device='cpu', dtype=torch.float32, tile=0, tile_pad=10, pad_multiple=1):
    """Run ``net`` on an HWC float32 RGB image in [0, 1]; returns HWC float32 (clipped to [0, 1])."""
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].to(device=device, dtype=dtype)
    # tiles rounded to the multiple: on the padded image each tile is one, so none is padded alone
    tile, tile_pad = align_tile(tile, tile_pad, pad_multiple) if tile and tile > 0 else (0, tile_pad)
    out = padded_forward(net, x, pad_multiple, tile, tile_pad)
    return out[0].float().clamp_(0, 1).cpu().numpy().transpose(1, 2, 0)


def upscale_image(net, img, alpha_upsampler='bicubic', **kw):
    """Upscale an image as read with ``IMREAD_UNCHANGED`` (HW, HWC BGR or HWC BGRA; uint8 or
    uint16 or float); returns an array of the same kind (channels, dtype) at the new size."""
    dtype = img.dtype
    if dtype == np.uint8:
        max_val = 255.
    elif dtype == np.uint16:
        max_val = 65535.
    else:
        max_val = 1.
    x = img.astype(np.float32) / max_val
    gray = x.ndim == 2 or x.shape[2] == 1
    alpha = None
    if gray:
        rgb = np.repeat(x.reshape(x.shape[0], x.shape[1], 1), 3, axis=2)
    elif x.shape[2] == 4:
        rgb, alpha = x[:, :, 2::-1], x[:, :, 3]
    elif x.shape[2] == 3:
        rgb = x[:, :, ::-1]
    elif x.shape[2] == 2:  # gray + alpha
        rgb, alpha, gray = np.repeat(x[:, :, :1], 3, axis=2), x[:, :, 1], True
    else:
        raise ValueError(f'images with {x.shape[2]} channels are not supported')
    out = upscale_rgb(net, rgb, **kw)
    oh, ow = out.shape[:2]
    if gray:
        out = out.mean(axis=2, keepdims=True) if alpha is not None else out.mean(axis=2)
    else:
        out = out[:, :, ::-1]  # RGB -> BGR
    if alpha is not None:
        if alpha_upsampler == 'net':
            a = upscale_rgb(net, np.repeat(alpha[:, :, None], 3, axis=2), **kw)[:, :, 1]
        else:
            a = np.clip(cv2.resize(alpha, (ow, oh), interpolation=cv2.INTER_CUBIC), 0, 1)
        if gray:  # gray + alpha is written as BGRA
            out = np.repeat(out, 3, axis=2)
        out = np.concatenate([out, a[:, :, None]], axis=2)
    if dtype in (np.uint8, np.uint16):
        out = np.round(out * max_val).astype(dtype)
    else:
        out = out.astype(np.float32)
    return np.ascontiguousarray(out)


def output_path(out_dir, in_path, suffix='out'):
    stem = os.path.splitext(os.path.basename(in_path))[0]
    return os.path.join(out_dir, f'{stem}_{suffix}.png' if suffix else f'{stem}.png')


def read_image(path):
    try:
        with open(path, 'rb') as f:
            content = f.read()
    except OSError as err:
        raise ImageReadError(f"Cannot read image '{path}': {err.strerror or err}", path) from None
    img = imfrombytes(content, flag='unchanged', path=path)
    if path.lower().endswith(('.jpg', '.jpeg')):
        # IMREAD_UNCHANGED ignores the EXIF orientation; a JPEG has no alpha, so decode it again with
        # the flags that apply the orientation and still keep grayscale as one channel.
        rotated = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
        if rotated is not None:
            img = rotated
    return img


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(
        prog='realsr-infer',
        description='Upscale image files with a trained network: '
                    '-i <file-or-dir> -o <dir> (--opt <test yml> | [--arch <name>] --model <.pth or .safetensors>).')
    p.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    p.add_argument('-o', '--output', required=True, help='output folder')
    p.add_argument('--opt', '-opt', help='test option file (network_g, path.pretrain_network_g, path.param_key_g)')
    p.add_argument('--arch', help='a registered arch name (with --model); overrides network_g.type with --opt; '
                                  'without --arch and --opt the arch is detected from the checkpoint')
    p.add_argument('--model', help='checkpoint (.pth or .safetensors; alone, its arch is detected); overrides '
                                   'path.pretrain_network_g with --opt')
    p.add_argument('--net-opt', action='append', metavar='KEY=VALUE',
                   help='arch constructor argument (YAML value), repeatable, e.g. --net-opt num_block=23')
    p.add_argument('--param-key', help='checkpoint key (default params_ema, falling back to params, then a bare '
                                       'state dict)')
    p.add_argument('--predictor', help='degradation predictor checkpoint (net_p) for DASR / CDDNet generators; '
                   'overrides path.pretrain_network_p with --opt')
    p.add_argument('--suffix', default='out', help="output name <stem>_<suffix>.png (default 'out'; '' for none)")
    p.add_argument('--tile', type=int, default=0, help='tile size in input pixels (0: no tiling)')
    p.add_argument('--tile-pad', type=int, default=10, help='context (overlap) around each tile (default 10)')
    p.add_argument('--pad-multiple', type=int, default=None,
                   help='reflect-pad inputs to a multiple of this and crop the output (default: inferred '
                        'from the arch: RRDBNet x2/x1 -> 2/4, window-based archs -> window size, else 1)')
    p.add_argument('--alpha-upsampler', choices=('bicubic', 'net'), default='bicubic',
                   help='how to upscale an alpha channel (default bicubic)')
    p.add_argument('--device', default='auto', help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument('--half', action='store_true', help='float16 (CUDA only)')
    p.add_argument('--bf16', action='store_true', help='bfloat16 (CUDA, or the CPU)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def run(args):
    """Run the tool on parsed arguments; returns the exit status (0 ok, 1 some images failed)."""
    from tqdm import tqdm

    if args.tile < 0 or args.tile_pad < 0:
        raise InferenceError('--tile and --tile-pad must not be negative')
    if args.pad_multiple is not None and args.pad_multiple < 1:
        raise InferenceError('--pad-multiple must be at least 1')
    device, dtype = resolve_device_dtype(args.device, args.half, args.bf16)
    files, skipped = list_inputs(args.input)
    net_opt, model_path, param_key, strict, scale = network_options(args)
    net = build_model(net_opt, model_path, param_key, strict)
    if needs_predictor(net):
        net = attach_predictor(net, args.predictor, getattr(args, 'predictor_opt', None))
    net = net.to(device=device, dtype=dtype)
    pad_multiple = args.pad_multiple or infer_pad_multiple(net)
    kw = dict(device=device, dtype=dtype, tile=args.tile, tile_pad=args.tile_pad, pad_multiple=pad_multiple)
    for path in skipped:
        print(f'realsr-infer: skipping {path!r} (not an image file extension)', file=sys.stderr)
    if not files:
        subfolders = sorted(e.name for e in os.scandir(args.input) if e.is_dir()) if os.path.isdir(args.input) else []
        hint = f" (it has the folders {', '.join(subfolders)}: point -i at one of them)" if subfolders else ''
        print(f'realsr-infer: no image files in {args.input!r}{hint}', file=sys.stderr)
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as err:  # a file of that name, no permission, ...
        raise InferenceError(f'output folder {args.output!r} cannot be created: {err.strerror or err}') from None
    written, failed = [], []
    bar = tqdm(files, unit='img', disable=args.quiet or len(files) == 0, file=sys.stderr)
    for path in bar:
        bar.set_postfix_str(os.path.basename(path))
        try:
            img = read_image(path)
            out = upscale_image(net, img, alpha_upsampler=args.alpha_upsampler, **kw)
            if scale and out.shape[0] != img.shape[0] * scale:
                tqdm.write(f'realsr-infer: note: {path!r} was upscaled x{out.shape[0] / img.shape[0]:g}, '
                           f'the option file says scale {scale}', file=sys.stderr)
            dst = output_path(args.output, path, args.suffix)
            if dst in written:
                tqdm.write(f'realsr-infer: warning: {path!r} overwrites {dst!r}, written from another input with '
                           'the same name', file=sys.stderr)
            imwrite(out, dst)
            written.append(dst)
        except (ImageReadError, ImageWriteError, ValueError) as err:
            failed.append(path)
            tqdm.write(f'realsr-infer: error: {err}', file=sys.stderr)
    bar.close()
    prec = {torch.float16: 'fp16', torch.bfloat16: 'bf16'}.get(dtype, 'fp32')
    tiling = f'tile {args.tile} pad {args.tile_pad}' if args.tile else 'no tiling'
    print(f'realsr-infer: {len(written)} written, {len(failed)} failed, {len(skipped)} skipped -> '
          f'{args.output} ({net_opt["type"] if net_opt else getattr(net, "arch_name", type(net).__name__)}, '
          f'{device} {prec}, {tiling})')
    for path in failed:
        print(f'realsr-infer: failed: {path}', file=sys.stderr)
    return 1 if failed else 0


def main(argv=None):
    from realsr.option_schema import OptionError
    args = build_parser().parse_args(argv)
    try:
        status = run(args)
    except (InferenceError, OptionError) as err:
        print(f'realsr-infer: error: {err}', file=sys.stderr)
        sys.exit(2)
    if status:
        sys.exit(status)
    return 0
