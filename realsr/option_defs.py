"""Every option of a realsr option file, defined once.

ADD A NEW OPTION HERE: one ``Option(name, kind, default, doc)`` line in the tuple of its section
below (``LOGGER``, ``TRAIN``, ``VAL``, ``DIST_PARAMS``, ``PATH``, ``TOP_LEVEL``, ``LOADER``, or a
dataset type in ``DATASET_TYPES``), plus ``choices=``/``minimum=`` when its values are limited.
The checker (:mod:`realsr.option_schema`), the default filling of :func:`realsr.options.parse_options`
and the editor schema (``realsr-options schema``) all read these tuples, and
``tests/test_option_definitions.py`` fails until some module of the package reads the new key.
The training-step options (``STEP_OPTIONS``) are read together by :mod:`realsr.runtime.step_options`.

Kinds are the checker's: ``int``, ``num``, ``bool``, ``str``, ``list``, ``dict``, ``any``, or
alternatives such as ``int|str``. A default of ``None`` means "not set" (BasicSR's ``~``); other
defaults are written into the options before any reader sees them (``fill_defaults``), so readers
use ``opt['key']``. A default that is not written (``fill=False``: it depends on the dataset type,
has an alias, or belongs to a section that may be absent) and a reader that may get options built
in code take the default from here, through :func:`value` or :func:`with_defaults`: defaults live
here and nowhere else (``tests/test_option_definitions.py`` fails on a reader that writes one).
This module imports nothing of realsr, so every layer may read it. Options stay plain nested
dicts, as in BasicSR, so user code keeps its dict access. Stdlib dataclasses: no dependency, typed
and immutable; a pydantic/msgspec model would add a dependency and turn the option dict into
objects that BasicSR-style code does not expect.
"""
import copy
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    name: str
    kind: str
    default: object = None  # None: not set; any other value is filled in by parse_options
    doc: str = ''
    choices: tuple = ()  # allowed values (None always allowed: "not set")
    minimum: float = None  # smallest allowed number (inclusive)
    required: str = ''  # 'always', 'train' (training only) or '' (optional)
    fill: bool = True  # False: not written into the options; readers take it through value()
    train_only: bool = False  # a dataset key that only a training dataset reads (rejected in val/test blocks)


# -- the training step (read together by realsr.runtime.step_options) ----------------------------
# Not filled (fill=False): train.use_grad_clip is an alias of train.grad_clip, which a filled default
# would hide; the reader applies these defaults.
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
STEP_OPTIONS = {  # section ('' = top level) -> options
    '': (
        Option('use_amp', 'bool', False, 'automatic mixed precision: networks run under autocast (fp16, or bf16 '
               'with amp_bf16); losses, metrics and the degradations stay fp32', fill=False),
        Option('amp_bf16', 'bool', False,
               'with use_amp, bfloat16 instead of float16 (no grad scaler; the only choice on a CPU)', fill=False),
        Option('use_channels_last', 'bool', False,
               'networks and their inputs in channels_last memory format (checkpoints stay plain NCHW)', fill=False),
        Option('use_compile', 'bool', False,
               'torch.compile net_g and net_d before the DDP wrap (EMA and validation stay eager)', fill=False),
        Option('compile_mode', 'str', 'default', 'torch.compile mode', choices=COMPILE_MODES, fill=False),
        Option('cudnn_benchmark', 'bool', True,
               "cuDNN autotuning for the training step's fixed shapes; always off while the degradations and "
               'validation run (their shapes vary: each new one would be autotuned)', fill=False),
    ),
    'train': (
        Option('grad_clip', 'bool', False,
               'clip the gradient norm of every network group (G, D) to grad_clip_max_norm', fill=False),
        Option('grad_clip_max_norm', 'num', 1.0, 'the largest total gradient norm with grad_clip', minimum=0.0,
               fill=False),
        Option('use_grad_clip', 'bool', None, "old name of train.grad_clip (BasicSR's), read as it"),
        Option('nonfinite_max_skips', 'int', 10, 'optimizer steps are skipped while a loss or gradient is '
               'NaN/Inf; the run stops after this many consecutive skips', minimum=1, fill=False),
    ),
    'datasets.train': (
        Option('accum_iter', 'int', 1, 'micro-batches accumulated into one optimizer step (effective batch: '
               'batch_size_per_gpu x accum_iter x world size); an iteration is one optimizer step', minimum=1,
               fill=False),
    ),
}


# -- Real-ESRGAN's second-order degradation (top level) -----------------------------------------
# Not filled (fill=False): only the on-the-fly models read them; the pipeline applies the defaults.
_STAGE = (
    ('resize_prob', 'list', 'probabilities of resize up, down, keep'),
    ('resize_range', 'list', '[min, max] resize factor'),
    ('gaussian_noise_prob', 'num', 'probability of Gaussian (else Poisson) noise'),
    ('noise_range', 'list', '[min, max] Gaussian noise sigma (0-255 scale)'),
    ('poisson_scale_range', 'list', '[min, max] Poisson noise scale'),
    ('gray_noise_prob', 'num', 'probability that the noise is the same on all channels'),
    ('jpeg_range', 'list', '[min, max] JPEG quality'),
)
STAGE_KEYS = tuple(k for k, _, _ in _STAGE)
# Real-ESRGAN's values (options/train_realesrnet_x4plus.yml) for the stages '' and '2', and DASR's
# (train_DASR.yml) for its weak and standard one-stage spaces.
_STAGE_DEFAULTS = {
    '': {'resize_prob': [0.2, 0.7, 0.1], 'resize_range': [0.15, 1.5], 'gaussian_noise_prob': 0.5,
         'noise_range': [1, 30], 'poisson_scale_range': [0.05, 3], 'gray_noise_prob': 0.4, 'jpeg_range': [30, 95]},
    '2': {'resize_prob': [0.3, 0.4, 0.3], 'resize_range': [0.3, 1.2], 'gaussian_noise_prob': 0.5,
          'noise_range': [1, 25], 'poisson_scale_range': [0.05, 2.5], 'gray_noise_prob': 0.4, 'jpeg_range': [30, 95]},
    '_weak1': {'resize_prob': [0.1, 0.2, 0.7], 'resize_range': [0.85, 1.2], 'gaussian_noise_prob': 0.5,
               'noise_range': [1, 10], 'poisson_scale_range': [0.05, 0.5], 'gray_noise_prob': 0.4,
               'jpeg_range': [90, 95]},
    '_standard1': {'resize_prob': [0.3, 0.4, 0.3], 'resize_range': [0.5, 1.2], 'gaussian_noise_prob': 0.5,
                   'noise_range': [1, 20], 'poisson_scale_range': [0.05, 1.5], 'gray_noise_prob': 0.4,
                   'jpeg_range': [50, 95]},
}
DASR_SPACE_SUFFIXES = ('_weak1', '_standard1')  # DASR's one-stage spaces (realsr.degradations.dasr_spaces)
DASR_SPACES = ('weak_degrade_one_stage', 'standard_degrade_one_stage', 'severe_degrade_two_stage')
_STAGE_NAMES = {'': 'first stage', '2': 'second stage', '_weak1': 'DASR weak space',
                '_standard1': 'DASR standard space'}
DEGRADATION_TOP = (
    *(Option(k + suffix, kind, _STAGE_DEFAULTS[suffix][k], f'{_STAGE_NAMES[suffix]}: {doc}', fill=False)
      for suffix in ('', '2') + DASR_SPACE_SUFFIXES for k, kind, doc in _STAGE),
    Option('second_blur_prob', 'num', 0.8, 'probability of the second blur', fill=False),
    Option('gt_size', 'int', None, 'GT patch size cut from each degraded crop (a multiple of scale)', minimum=1),
    Option('queue_size', 'int', 180, 'training-pair pool size (0 disables the pool; with per_sample and no '
           'queue_size: 0)', minimum=0, fill=False),
    Option('high_order_degradation', 'bool', True, 'degrade GT on the fly; false: paired data', fill=False),
    Option('gt_usm', 'bool', False, 'sharpen the GT with USM before the losses', fill=False),
    Option('l1_gt_usm', 'bool', True, 'pixel loss against the sharpened GT', fill=False),
    Option('percep_gt_usm', 'bool', True, 'perceptual loss against the sharpened GT', fill=False),
    Option('gan_gt_usm', 'bool', False, 'GAN loss against the sharpened GT', fill=False),
    Option('per_sample', 'bool', False, 'draw every degradation choice per sample instead of per batch', fill=False),
    Option('degree_list', 'list', list(DASR_SPACES), "DASR's degradation spaces, drawn from", fill=False),
    Option('degree_prob', 'list', [0.3, 0.3, 0.4], "DASR's probability of each space of degree_list", fill=False),
    Option('num_networks', 'int', None, "DASR's number of experts; must equal network_g.num_models", minimum=1),
)

# -- the top level ------------------------------------------------------------------------------
TOP_LEVEL = (
    Option('name', 'str|num', None, 'experiment name: the folder under experiments/ or results/', required='always'),
    Option('model_type', 'str', None, 'registered model: SRModel, RealESRGANModel, DASRModel, ...',
           required='always'),
    Option('scale', 'int', None, 'upscaling factor, copied into every dataset', minimum=1),
    Option('num_gpu', 'int|str', 'auto', "GPUs: 'auto' (all visible), 0 (CPU) or a number"),
    Option('manual_seed', 'int', None, 'random seed (drawn at random when not set)'),
    Option('find_unused_parameters', 'bool', False, "DDP's find_unused_parameters"),
    Option('dist_params', 'dict', None, 'distributed settings (see dist_params.*)'),
    Option('datasets', 'dict', None, 'train / val_* / test_* datasets'),
    Option('datasets_grid', 'dict|list', None, 'datasets x degradations (realsr.benchmark.grid), expanded first'),
    Option('path', 'dict', None, 'pretrained weights, resume state, output roots'),
    Option('train', 'dict', None, 'optimizers, scheduler, losses, iterations', required='train'),
    Option('val', 'dict', None, 'validation during training / metrics of realsr-test'),
    Option('logger', 'dict', None, 'log and checkpoint frequencies, tensorboard, wandb'),
    Option('tile', 'dict', None, 'tiled inference for large test images (tile_size, tile_pad)'),
    Option('weight', 'num', 1.0, "Simple-Align's regularizer strength (its files' top-level key; "
           'realsr.compat)', fill=False),
    Option('regularizers', 'list', None, 'regularizers attached to network_g: [{type: ChannelDropout, ...}]'),
    *STEP_OPTIONS[''],
    *DEGRADATION_TOP,
    # set by parse_options, not by the file (accepted so a resolved option file validates again)
    Option('is_train', 'bool', False, 'set by realsr: training or testing', fill=False),
    Option('dist', 'bool', False, 'set by realsr: distributed run', fill=False),
    Option('rank', 'int', 0, 'set by realsr: process rank', fill=False),
    Option('world_size', 'int', 1, 'set by realsr: number of processes', fill=False),
    Option('auto_resume', 'bool', None, 'set by realsr from --auto_resume'),
    Option('root_path', 'str', None, 'set by realsr: the root of experiments/ and results/'),
    Option('device', 'str', None, 'set by realsr: the torch device of this process'),
)
NETWORK_KEY = re.compile(r'^network_[a-z]\w*$')  # network_g, network_d, network_p: {type: <arch>, <arch args>}

DIST_PARAMS = (
    Option('backend', 'str', None, 'torch.distributed backend (nccl on GPU, gloo on CPU by default)'),
    Option('port', 'int', None, 'master port (slurm launcher; default 29500)', minimum=1),
    # read by runtime.dist.dist_timeout, which applies the default: an absent section is not filled
    Option('timeout', 'num', 1800, 'seconds a collective (all-reduce, barrier) waits for the other ranks before the '
           'run stops with an error naming this option; default 1800', minimum=1, fill=False),
)

PATH = (
    Option('resume_state', 'str', None, 'a training_states/<iter>.state file to resume from'),
    Option('ignore_resume_networks', 'list', None, 'network labels not loaded when resuming (e.g. [network_d])'),
    Option('experiments_root', 'str', None, 'root of experiments/<name> (default ./experiments)'),
    Option('results_root', 'str', None, 'root of results/<name> (default ./results)'),
    # set by parse_options from the roots
    Option('models', 'str', None, 'set by realsr: experiments/<name>/models'),
    Option('training_states', 'str', None, 'set by realsr: experiments/<name>/training_states'),
    Option('log', 'str', None, 'set by realsr: the log folder'),
    Option('visualization', 'str', None, 'set by realsr: the folder of saved images'),
)
PATH_PATTERNS = (  # (pattern, kind, doc) for each network label <x> of network_<x>
    (re.compile(r'^pretrain_network_[a-z]\w*$'), 'str', 'a .pth file loaded into network_<x>'),
    (re.compile(r'^param_key_[a-z]\w*$'), 'str', "the key of the weights in that file (params, params_ema)"),
    (re.compile(r'^strict_load_[a-z]\w*$'), 'bool', 'load with strict key matching (default true)'),
)

TRAIN = (
    Option('total_iter', 'int', None, 'number of training iterations (optimizer steps)', minimum=1, required='train'),
    Option('warmup_iter', 'int', -1, 'linear learning-rate warm-up iterations (-1: none)', minimum=-1),
    Option('ema_decay', 'num', 0, 'EMA decay of net_g_ema (0: no EMA)', minimum=0),
    Option('optim_g', 'dict', None, 'generator optimizer: {type: Adam, lr: 2e-4, ...}', required='train'),
    Option('optim_d', 'dict', None, 'discriminator optimizer'),
    Option('scheduler', 'dict', None, 'learning-rate scheduler: {type: MultiStepLR, milestones: [...], gamma: 0.5}'),
    Option('net_d_iters', 'int', 1, 'update the generator every net_d_iters iterations', minimum=1),
    Option('net_d_init_iters', 'int', 0, 'iterations that train only the discriminator at the start', minimum=0),
    *STEP_OPTIONS['train'],
)
# Loss slots: train.<slot> = {type: <loss>, <loss args>}; the slots each model reads.
LOSS_SLOTS = {
    'SRModel': ('pixel_opt', 'perceptual_opt'),
    'RealESRNetModel': ('pixel_opt', 'perceptual_opt'),
    'RealESRGANModel': ('pixel_opt', 'perceptual_opt', 'gan_opt'),
    'SRGANDynamicModel': ('pixel_opt', 'perceptual_opt', 'gan_opt', 'regress_opt', 'artifacts_opt', 'cycle_opt'),
    'DASRModel': ('pixel_opt', 'perceptual_opt', 'gan_opt', 'regress_opt', 'artifacts_opt', 'cycle_opt'),
    'DRCTModel': ('pixel_opt', 'perceptual_opt'),
    'SwinIRModel': ('pixel_opt', 'perceptual_opt'),
    'RealDRCTMSEModel': ('pixel_opt', 'perceptual_opt'),
    'RealDRCTGANModel': ('pixel_opt', 'perceptual_opt', 'gan_opt'),
    'HATModel': ('pixel_opt', 'perceptual_opt'),
    'RealHATMSEModel': ('pixel_opt', 'perceptual_opt'),
    'RealHATGANModel': ('pixel_opt', 'perceptual_opt', 'gan_opt'),
}
LOSS_KEY = re.compile(r'^\w+_opt$')
# Networks each model builds: network_<label> = {type: <arch>, <arch args>}; path.*_<label> go with them.
NETWORK_SLOTS = {
    'SRModel': ('g',), 'RealESRNetModel': ('g',), 'DRCTModel': ('g',), 'SwinIRModel': ('g',),
    'RealDRCTMSEModel': ('g',), 'RealESRGANModel': ('g', 'd'), 'RealDRCTGANModel': ('g', 'd'),
    'SRGANDynamicModel': ('g', 'd', 'p'), 'DASRModel': ('g', 'd', 'p'),
    'HATModel': ('g',), 'RealHATMSEModel': ('g',), 'RealHATGANModel': ('g', 'd'),
}

VAL = (
    Option('val_freq', 'int', None, 'validate every val_freq iterations', minimum=1, required='train'),
    Option('save_img', 'bool', False, 'save the SR images'),
    Option('suffix', 'str', None, 'file-name suffix of saved test images (default: the experiment name)'),
    Option('pbar', 'bool', True, 'progress bar while validating'),
    Option('metrics', 'dict', None, 'name: {type: calculate_psnr, crop_border: 4, ...}'),
    Option('tile', 'dict', None, 'tiled inference while validating (tile_size, tile_pad)'),
    Option('compare_bicubic', 'bool', False, "log bicubic upsampling's metrics next to the model's"),
    Option('pad_mode', 'str', 'reflect', 'window padding of DRCT/SwinIR/HAT test inputs', choices=('reflect', 'flip')),
)
TILE = (
    Option('tile_size', 'int', 0, 'tile side in LQ pixels (0: no tiling)', minimum=0),
    Option('tile_pad', 'int', 10, 'overlap of neighbouring tiles in LQ pixels', minimum=0),
)
METRIC = (
    Option('type', 'str', None, 'registered metric: calculate_psnr, calculate_ssim, calculate_niqe, ...',
           required='always'),
    Option('better', 'str', 'higher', 'which direction is better (for the best-value record)',
           choices=('higher', 'lower')),
)

CHECKPOINT_FORMATS = ('pth', 'safetensors')  # network files (realsr.runtime.model_files)
LOGGER = (
    Option('print_freq', 'int', 100, 'iterations between log lines', minimum=1),
    Option('save_checkpoint_freq', 'int', 5000, 'iterations between checkpoints', minimum=1),
    Option('use_tb_logger', 'bool', True, 'write tensorboard logs to tb_logger/<name>'),
    Option('wandb', 'dict', None, 'Weights & Biases logging (see logger.wandb.*)'),
    Option('save_checkpoint_format', 'str', 'pth',
           "models/net_*_<iter> files: pth (BasicSR's) or safetensors (one file, param keys as prefixes, arch and "
           'iteration in the metadata; docs/models_io.md); training states stay .state', choices=CHECKPOINT_FORMATS),
)
WANDB = (
    Option('project', 'str', None, 'wandb project; not set: no wandb logging'),
    Option('resume_id', 'str', None, 'wandb run id to resume'),
    Option('entity', 'str', None, 'wandb entity (user or team)'),
)

# -- datasets -----------------------------------------------------------------------------------
PHASES = ('train', 'val', 'test')  # a dataset key is <phase> or <phase>_<anything>
LOADER = (  # every dataset, any type
    Option('name', 'str|num', None, 'dataset name in logs and result folders'),
    Option('type', 'str', None, 'registered dataset: PairedImageDataset, RealESRGANDataset, ...',
           required='always'),
    Option('phase', 'str', None, 'set by realsr from the dataset key', choices=PHASES),
    Option('scale', 'int', 1, 'set by realsr from the top-level scale', fill=False),
    Option('io_backend', 'dict', None, 'image storage: {type: disk} or {type: lmdb}'),
    # the training loader's (validation and test load one whole image at a time, in the main process)
    Option('num_worker_per_gpu', 'int', 0, 'data-loader worker processes per GPU', minimum=0, fill=False,
           train_only=True),
    Option('batch_size_per_gpu', 'int', None, 'training batch size per GPU', minimum=1, train_only=True),
    Option('dataset_enlarge_ratio', 'int', 1, 'repeat the dataset this many times per epoch', minimum=1,
           fill=False, train_only=True),
    Option('prefetch_mode', 'str', None, 'prefetch batches: ~ (none), cpu or cuda', choices=('cpu', 'cuda'),
           train_only=True),
    Option('num_prefetch_queue', 'int', 1, 'batches kept ahead with prefetch_mode', minimum=1, fill=False,
           train_only=True),
    Option('prefetch_factor', 'int', 2, 'batches loaded ahead by each worker (torch DataLoader)', minimum=1,
           fill=False, train_only=True),
    Option('pin_memory', 'bool', None, 'pinned host memory (default: on when training on a GPU)', train_only=True),
    Option('persistent_workers', 'bool', False, 'keep workers alive between epochs', fill=False, train_only=True),
    Option('skip_bad_images', 'bool', False, 'skip unreadable images with a warning instead of stopping',
           fill=False),
    Option('use_shuffle', 'bool', None, "BasicSR's; ignored, with a log line (the sampler shuffles)"),
)
IO_BACKEND = (
    Option('type', 'str', 'disk', 'disk or lmdb', choices=('disk', 'lmdb'), fill=False),
    Option('db_paths', 'list|str', None, 'lmdb folders (set by the dataset from dataroot_*)'),
    Option('client_keys', 'list|str', None, 'lmdb client names (set by the dataset)'),
    # lmdb.open arguments: the defaults of realsr.data.file_client.LmdbBackend
    Option('readonly', 'bool', True, 'lmdb: open read-only', fill=False),
    Option('lock', 'bool', False, 'lmdb: use locks', fill=False),
    Option('readahead', 'bool', False, 'lmdb: OS read-ahead', fill=False),
)
PAIRED_DATASET = (
    Option('dataroot_gt', 'str', None, 'folder (or .lmdb) of GT images'),
    Option('dataroot_lq', 'str', None, 'folder (or .lmdb) of LQ images'),
    Option('meta_info_file', 'str', None, 'text file listing the image names to use'),
    Option('filename_tmpl', 'str', '{}', "LQ file-name template, e.g. '{}x4'", fill=False),
    Option('gt_size', 'int', None, 'GT patch size for training (a multiple of scale)', minimum=1, train_only=True),
    Option('use_hflip', 'bool', False, 'random horizontal flips (training)', fill=False, train_only=True),
    Option('use_rot', 'bool', False, 'random 90-degree rotations and vertical flips (training)', fill=False,
           train_only=True),
    Option('color', 'str', None, "'y': use the Y channel only", choices=('y',)),
    Option('mean', 'list', None, 'per-channel mean subtracted from the images'),
    Option('std', 'list', None, 'per-channel std the images are divided by'),
)
REALESRGAN_DATASET = (
    Option('dataroot_gt', 'str', None, 'folder (or .lmdb) of GT images'),
    Option('meta_info', 'str', None, 'text file listing the GT images (relative to dataroot_gt)'),
    Option('meta_info_file', 'str', None, 'as meta_info (the spelling of the Real-DRCT files)'),
    Option('gt_size', 'int', None, 'GT patch size (a multiple of scale; Real-ESRGAN also reads the top-level key)',
           minimum=1),
    Option('use_hflip', 'bool', True, 'random horizontal flips', fill=False),
    Option('use_rot', 'bool', False, 'random 90-degree rotations and vertical flips', fill=False),
    Option('crop_pad_size', 'int', 400, 'GT crops are cropped/padded to this size', minimum=1, fill=False),
)
_KERNEL = (
    ('blur_kernel_size', 'int', 'kernel size (the reference ignores it: kernel_range decides)'),
    ('blur_kernel_size_minimum', 'int', "DASR's smallest kernel size"),
    ('kernel_list', 'list', 'kernel types (iso, aniso, generalized_*, plateau_*)'),
    ('kernel_prob', 'list', 'probability of each kernel type'),
    ('blur_sigma', 'list', '[min, max] Gaussian sigma'),
    ('betag_range', 'list', '[min, max] generalized-Gaussian beta'),
    ('betap_range', 'list', '[min, max] plateau beta'),
    ('sinc_prob', 'num', 'probability of a sinc kernel instead'),
)
_BLUR_NAMES = {'': 'first blur', '2': 'second blur', '_weak1': 'DASR weak space', '_standard1': 'DASR standard space'}


def _kernel_key(key, suffix):
    """DASR spells the second stage's smallest size ``blur_kernel_size2_minimum``."""
    return 'blur_kernel_size2_minimum' if (key, suffix) == ('blur_kernel_size_minimum', '2') else key + suffix


def _kernel_options(suffixes, defaults):
    return tuple(Option(_kernel_key(k, suffix), kind, defaults.get(suffix, {}).get(k),
                        f'{_BLUR_NAMES[suffix]}: {doc}', fill=False)
                 for suffix in suffixes for k, kind, doc in _KERNEL)


_KERNEL_SIZES = (
    Option('kernel_range', 'list', [7, 21], "[min, max] odd kernel sizes of the first blur (the reference's list)",
           fill=False),
    Option('kernel_range2', 'list', None, '[min, max] odd kernel sizes of the second blur (default: kernel_range)'),
    Option('final_kernel_range', 'list', None, '[min, max] odd sizes of the final sinc (default: kernel_range)'),
)
# Kernel keys of on-the-fly training, read from datasets.train by the models' degradation pipeline.
# Real-ESRGAN's have no defaults (its files set every one; realsr.degradations.pipeline.OFFICIAL_KERNEL_OPT).
DEGRADATION_DATASET = _kernel_options(('', '2'), {}) + _KERNEL_SIZES + (
    Option('final_sinc_prob', 'num', None, 'probability of the final sinc filter'),)
# DASR's (train_DASR.yml's values): the two stages of its severe space and its weak and standard spaces.
_DASR_KERNEL = {'kernel_list': ['iso', 'aniso'], 'kernel_prob': [0.65, 0.35], 'sinc_prob': 0, 'betag_range': [0.5, 4],
                'betap_range': [1, 2], 'blur_kernel_size_minimum': 7, 'blur_kernel_size': 21}
DASR_DEGRADATION_DATASET = _kernel_options(('', '2') + DASR_SPACE_SUFFIXES, {
    suffix: dict(_DASR_KERNEL, blur_sigma=sigma)
    for suffix, sigma in (('', [0.2, 3]), ('2', [0.2, 1.5]), ('_weak1', [0.2, 0.8]), ('_standard1', [0.2, 1.5]))
}) + _KERNEL_SIZES + (Option('final_sinc_prob', 'num', 0.8, 'probability of the final sinc filter', fill=False),)
# Keys each built-in dataset reads, by type (BasicSR names). A user's registered dataset with an
# ``option_keys`` attribute ({key: kind}) is checked the same way; without it only LOADER is ours.
DATASET_TYPES = {
    'PairedImageDataset': PAIRED_DATASET,
    'RealESRGANPairedDataset': PAIRED_DATASET + (
        Option('meta_info', 'str', None, "text file of 'gt_path, lq_path' lines"),),
    'SingleImageDataset': tuple(o for o in PAIRED_DATASET
                                if o.name in ('dataroot_lq', 'meta_info_file', 'color', 'mean', 'std')),
    'RealESRGANDataset': REALESRGAN_DATASET,
    'DASRDataset': REALESRGAN_DATASET,
}
# Datasets whose training phase also carries degradation kernel keys (these) and the step options.
ON_THE_FLY_DATASETS = {'RealESRGANDataset': DEGRADATION_DATASET, 'DASRDataset': DASR_DEGRADATION_DATASET}
TRAIN_DATASET_EXTRA = STEP_OPTIONS['datasets.train']

SECTIONS = {
    '': TOP_LEVEL, 'dist_params': DIST_PARAMS, 'path': PATH, 'train': TRAIN, 'val': VAL, 'val.tile': TILE,
    'tile': TILE, 'logger': LOGGER, 'logger.wandb': WANDB,
}
# Sections whose non-None defaults parse_options writes into the options (when the section exists).
FILLED_SECTIONS = ('', 'logger', 'train', 'val', 'dist_params')


def kinds(options):
    """``{name: kind}`` of a tuple of options."""
    return {o.name: o.kind for o in options}


def by_name(options):
    return {o.name: o for o in options}


def dataset_options(dataset_type, phase):
    """The options of one dataset block (a tuple), or None for a type we do not know the keys of."""
    own = DATASET_TYPES.get(dataset_type)
    if own is None:
        return None
    if phase != 'train':
        return tuple(o for o in LOADER + own if not o.train_only)
    return LOADER + own + ON_THE_FLY_DATASETS.get(dataset_type, ()) + TRAIN_DATASET_EXTRA


def all_dataset_options():
    """Every option of every built-in dataset type, any phase (with repeats)."""
    for name in DATASET_TYPES:
        yield from dataset_options(name, 'train')


def known_dataset_keys(dataset_type):
    """Every key a block of this built-in type may hold (any phase), or None: for the dataset grid."""
    options = dataset_options(dataset_type, 'train')
    return None if options is None else {o.name for o in options}


def _fill(node, section):
    for o in SECTIONS[section]:
        if o.fill and o.default is not None and node.get(o.name) is None:
            node[o.name] = copy.deepcopy(o.default)  # a list default must not be shared with the definition
    return node


def fill_section_defaults(opt, section):
    """Write the non-None defaults of one section (``''``: the top level) into ``opt`` in place,
    if the section is there."""
    node = opt if not section else opt.get(section)
    if isinstance(node, dict):
        _fill(node, section)
    return opt


def with_defaults(opt, section):
    """A copy of one section of ``opt`` (``''``: the top level; an absent section is empty) with its
    defaults filled in, for readers that may get options built in code; ``opt`` is left as it is."""
    node = opt if not section else opt.get(section)
    return _fill(dict(node if isinstance(node, dict) else {}), section)


def default(options, name):
    """The default defined for ``name`` among ``options`` (a tuple of :class:`Option`)."""
    for o in options:
        if o.name == name:
            return copy.deepcopy(o.default)  # the caller may change a list default; the definition stays
    raise KeyError(f'{name!r} is not defined in this section of realsr/option_defs.py')


def value(node, options, name):
    """``node[name]`` (``node``: one section of the options, or None), or the default defined for
    ``name`` among ``options`` when the key is absent or None: how code reads an option whose
    default is not filled in (``fill=False``) or whose options may have been built in code."""
    found = node.get(name) if isinstance(node, dict) else None
    return default(options, name) if found is None else found


def reader_defaults(opt):
    """``[(dotted key, default)]`` of the defaults that readers apply but parse_options does not
    write (``fill=False``), for the keys this option file leaves unset: what ``--dry_run`` lists
    below the resolved options. The degradation keys only for an on-the-fly training dataset."""
    datasets = opt.get('datasets') if isinstance(opt.get('datasets'), dict) else {}
    train_type = (datasets.get('train') or {}).get('type') if isinstance(datasets.get('train'), dict) else None
    dasr_only = {o.name for o in DEGRADATION_TOP
                 if o.name.endswith(DASR_SPACE_SUFFIXES) or o.name.startswith('degree_')}
    skip = {'weight'}  # only with Simple-Align's name switch (realsr.compat logs it)
    if train_type not in ON_THE_FLY_DATASETS:
        skip |= {o.name for o in DEGRADATION_TOP}
    elif train_type != 'DASRDataset':
        skip |= dasr_only
    out = []

    def unset(node, options, prefix):
        for o in options:
            if not o.fill and o.default is not None and o.name not in skip and node.get(o.name) is None:
                out.append((prefix + o.name, o.default))

    for section in ('', 'train', 'dist_params'):
        node = opt if not section else opt.get(section)
        if isinstance(node, dict) or (section == 'dist_params' and opt.get('dist')):
            unset(node or {}, SECTIONS[section], f'{section}.' if section else '')
    for key, ds in datasets.items():
        options = dataset_options(ds.get('type'), ds.get('phase')) if isinstance(ds, dict) else None
        if options is not None:
            unset(ds, options, f'datasets.{key}.')
            unset(ds.get('io_backend') or {}, IO_BACKEND if (ds.get('io_backend') or {}).get('type') == 'lmdb'
                  else (), f'datasets.{key}.io_backend.')
    return out


def fill_defaults(opt, is_train):
    """Write the non-None defaults of the filled sections into ``opt`` (in place); a section that
    is absent is not created, except ``logger`` and ``path`` (always read)."""
    opt.setdefault('path', {})
    if is_train:
        opt.setdefault('logger', {})
    for section in FILLED_SECTIONS:
        fill_section_defaults(opt, section)
    return opt


def all_definitions():
    """``(dotted path, Option)`` of every definition; dataset keys under ``datasets.<type>``."""
    for section, options in SECTIONS.items():
        for o in options:
            yield (f'{section}.{o.name}' if section else o.name), o
    for o in METRIC:
        yield f'val.metrics.*.{o.name}', o
    for o in LOADER + IO_BACKEND:
        yield f'datasets.*.{o.name}', o
    for name in DATASET_TYPES:
        for o in dataset_options(name, 'train')[len(LOADER):]:
            yield f'datasets.{name}.{o.name}', o
