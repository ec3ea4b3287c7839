"""Every option of a realsr option file, defined once.

ADD A NEW OPTION HERE: one ``Option(name, kind, default, doc)`` line in the tuple of its section
below (``LOGGER``, ``TRAIN``, ``VAL``, ``DIST_PARAMS``, ``PATH``, ``TOP_LEVEL``, ``LOADER``, or a
dataset type in ``DATASET_TYPES``), plus ``choices=``/``minimum=`` when its values are limited.
The checker (:mod:`realsr.option_schema`), the default filling of :func:`realsr.options.parse_options`
and the editor schema (``realsr-options schema``) all read these tuples, and
``tests/test_option_definitions.py`` fails until some module of the package reads the new key.
The training-step options are defined in :mod:`realsr.runtime.step_options` (below the models,
which read them) and only listed here.

Kinds are the checker's: ``int``, ``num``, ``bool``, ``str``, ``list``, ``dict``, ``any``, or
alternatives such as ``int|str``. A default of ``None`` means "not set" (BasicSR's ``~``); other
defaults are written into the options before any reader sees them (``fill_defaults``), so readers
use ``opt['key']``. Options stay plain nested dicts, as in BasicSR, so user code keeps its dict
access. Stdlib dataclasses: no dependency, typed and immutable; a pydantic/msgspec model would
add a dependency and turn the option dict into objects that BasicSR-style code does not expect.
"""
import re
from dataclasses import dataclass

from realsr.runtime import model_files
from realsr.runtime.step_options import STEP_OPTIONS


@dataclass(frozen=True)
class Option:
    name: str
    kind: str
    default: object = None  # None: not set; any other value is filled in by parse_options
    doc: str = ''
    choices: tuple = ()  # allowed values (None always allowed: "not set")
    minimum: float = None  # smallest allowed number (inclusive)
    required: str = ''  # 'always', 'train' (training only) or '' (optional)
    fill: bool = True  # False: the reader applies the default itself (a default that depends on the case)


def _step(section):
    return tuple(Option(o.key, o.kind, o.default, o.doc, o.choices, o.minimum, fill=False)
                 for o in STEP_OPTIONS if o.section == section)


# -- Real-ESRGAN's second-order degradation (top level) -----------------------------------------
# Defaults: realsr.degradations.pipeline.DEFAULTS (Real-ESRGAN's values), applied by the pipeline.
_STAGE = (
    ('resize_prob', 'list', 'probabilities of resize up, down, keep'),
    ('resize_range', 'list', '[min, max] resize factor'),
    ('gaussian_noise_prob', 'num', 'probability of Gaussian (else Poisson) noise'),
    ('noise_range', 'list', '[min, max] Gaussian noise sigma (0-255 scale)'),
    ('poisson_scale_range', 'list', '[min, max] Poisson noise scale'),
    ('gray_noise_prob', 'num', 'probability that the noise is the same on all channels'),
    ('jpeg_range', 'list', '[min, max] JPEG quality'),
)
DASR_SPACE_SUFFIXES = ('_weak1', '_standard1')  # DASR's one-stage spaces (realsr.degradations.dasr_spaces)
DEGRADATION_TOP = (
    *(Option(k, kind, None, f'first stage: {doc}') for k, kind, doc in _STAGE),
    Option('second_blur_prob', 'num', None, 'probability of the second blur'),
    *(Option(k + '2', kind, None, f'second stage: {doc}') for k, kind, doc in _STAGE),
    *(Option(k + s, kind, None, f'DASR {s[1:-1]} space: {doc}')
      for s in DASR_SPACE_SUFFIXES for k, kind, doc in _STAGE),
    Option('gt_size', 'int', None, 'GT patch size cut from each degraded crop (a multiple of scale)', minimum=1),
    Option('queue_size', 'int', None, 'training-pair pool size (default 180; 0 disables the pool)', minimum=0),
    Option('high_order_degradation', 'bool', True, 'degrade GT on the fly; false: paired data', fill=False),
    Option('gt_usm', 'bool', False, 'sharpen the GT with USM before the losses', fill=False),
    Option('l1_gt_usm', 'bool', True, 'pixel loss against the sharpened GT', fill=False),
    Option('percep_gt_usm', 'bool', True, 'perceptual loss against the sharpened GT', fill=False),
    Option('gan_gt_usm', 'bool', False, 'GAN loss against the sharpened GT', fill=False),
    Option('per_sample', 'bool', False, 'draw every degradation choice per sample instead of per batch', fill=False),
    Option('degree_list', 'list', None, "DASR's degradation spaces (weak/standard/severe names)"),
    Option('degree_prob', 'list', None, "DASR's probability of each space"),
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
    Option('weight', 'num', None, "Simple-Align's regularizer strength (its files' top-level key)"),
    Option('regularizers', 'list', None, 'regularizers attached to network_g: [{type: ChannelDropout, ...}]'),
    *_step(''),
    *DEGRADATION_TOP,
    # set by parse_options, not by the file (accepted so a resolved option file validates again)
    Option('is_train', 'bool', None, 'set by realsr: training or testing'),
    Option('dist', 'bool', None, 'set by realsr: distributed run'),
    Option('rank', 'int', None, 'set by realsr: process rank'),
    Option('world_size', 'int', None, 'set by realsr: number of processes'),
    Option('auto_resume', 'bool', None, 'set by realsr from --auto_resume'),
    Option('root_path', 'str', None, 'set by realsr: the root of experiments/ and results/'),
    Option('device', 'str', None, 'set by realsr: the torch device of this process'),
)
NETWORK_KEY = re.compile(r'^network_[a-z]\w*$')  # network_g, network_d, network_p: {type: <arch>, <arch args>}

DIST_PARAMS = (
    Option('backend', 'str', None, 'torch.distributed backend (nccl on GPU, gloo on CPU by default)'),
    Option('port', 'int', None, 'master port (slurm launcher; default 29500)', minimum=1),
    # the reader (runtime.dist.dist_timeout) applies the default: an absent section is not filled. Its
    # values are written out here because runtime.dist imports torch, and parsing options must not
    # (tests/test_option_definitions.py checks they agree).
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
    *_step('train'),
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

LOGGER = (
    Option('print_freq', 'int', 100, 'iterations between log lines', minimum=1),
    Option('save_checkpoint_freq', 'int', 5000, 'iterations between checkpoints', minimum=1),
    Option('use_tb_logger', 'bool', True, 'write tensorboard logs to tb_logger/<name>'),
    Option('wandb', 'dict', None, 'Weights & Biases logging (see logger.wandb.*)'),
    Option('save_checkpoint_format', 'str', model_files.DEFAULT_FORMAT,
           "models/net_*_<iter> files: pth (BasicSR's) or safetensors (one file, param keys as prefixes, arch and "
           'iteration in the metadata; docs/models_io.md); training states stay .state', choices=model_files.FORMATS),
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
    Option('scale', 'int', None, 'set by realsr from the top-level scale'),
    Option('io_backend', 'dict', None, 'image storage: {type: disk} or {type: lmdb}'),
    Option('num_worker_per_gpu', 'int', 0, 'data-loader worker processes per GPU', minimum=0, fill=False),
    Option('batch_size_per_gpu', 'int', None, 'training batch size per GPU', minimum=1),
    Option('dataset_enlarge_ratio', 'int', 1, 'repeat the dataset this many times per epoch', minimum=1,
           fill=False),
    Option('prefetch_mode', 'str', None, 'prefetch batches: ~ (none), cpu or cuda', choices=('cpu', 'cuda')),
    Option('num_prefetch_queue', 'int', 1, 'batches kept ahead with prefetch_mode', minimum=1, fill=False),
    Option('prefetch_factor', 'int', 2, 'batches loaded ahead by each worker (torch DataLoader)', minimum=1,
           fill=False),
    Option('pin_memory', 'bool', None, 'pinned host memory (default: on when training on a GPU)'),
    Option('persistent_workers', 'bool', False, 'keep workers alive between epochs', fill=False),
    Option('skip_bad_images', 'bool', False, 'skip unreadable images with a warning instead of stopping',
           fill=False),
    Option('use_shuffle', 'bool', None, "BasicSR's; ignored, with a log line (the sampler shuffles)"),
)
IO_BACKEND = (
    Option('type', 'str', 'disk', 'disk or lmdb', choices=('disk', 'lmdb')),
    Option('db_paths', 'list|str', None, 'lmdb folders (set by the dataset from dataroot_*)'),
    Option('client_keys', 'list|str', None, 'lmdb client names (set by the dataset)'),
    Option('readonly', 'bool', None, 'lmdb: open read-only (default true)'),
    Option('lock', 'bool', None, 'lmdb: use locks (default false)'),
    Option('readahead', 'bool', None, 'lmdb: OS read-ahead (default false)'),
)
_PAIRED = (
    Option('dataroot_gt', 'str', None, 'folder (or .lmdb) of GT images'),
    Option('dataroot_lq', 'str', None, 'folder (or .lmdb) of LQ images'),
    Option('meta_info_file', 'str', None, 'text file listing the image names to use'),
    Option('filename_tmpl', 'str', None, "LQ file-name template, e.g. '{}x4' (default '{}')"),
    Option('gt_size', 'int', None, 'GT patch size for training (a multiple of scale)', minimum=1),
    Option('use_hflip', 'bool', False, 'random horizontal flips (training)', fill=False),
    Option('use_rot', 'bool', False, 'random 90-degree rotations and vertical flips (training)', fill=False),
    Option('color', 'str', None, "'y': use the Y channel only", choices=('y',)),
    Option('mean', 'list', None, 'per-channel mean subtracted from the images'),
    Option('std', 'list', None, 'per-channel std the images are divided by'),
)
_REALESRGAN = (
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
# Kernel keys of on-the-fly training: read from datasets.train by the models' degradation pipeline.
DEGRADATION_DATASET = (
    *(Option(k, kind, None, f'first blur: {doc}') for k, kind, doc in _KERNEL),
    *(Option(k + '2' if k != 'blur_kernel_size_minimum' else 'blur_kernel_size2_minimum', kind, None,
             f'second blur: {doc}') for k, kind, doc in _KERNEL),
    *(Option(k + s, kind, None, f'DASR {s[1:-1]} space: {doc}')
      for s in DASR_SPACE_SUFFIXES for k, kind, doc in _KERNEL),
    Option('final_sinc_prob', 'num', None, 'probability of the final sinc filter'),
    Option('kernel_range', 'list', None, '[min, max] odd kernel sizes of the first blur (default [7, 21])'),
    Option('kernel_range2', 'list', None, '[min, max] odd kernel sizes of the second blur (default: kernel_range)'),
    Option('final_kernel_range', 'list', None, '[min, max] odd sizes of the final sinc (default: kernel_range)'),
)
# Keys each built-in dataset reads, by type (BasicSR names). A user's registered dataset with an
# ``option_keys`` attribute ({key: kind}) is checked the same way; without it only LOADER is ours.
DATASET_TYPES = {
    'PairedImageDataset': _PAIRED,
    'RealESRGANPairedDataset': _PAIRED + (
        Option('meta_info', 'str', None, "text file of 'gt_path, lq_path' lines"),),
    'SingleImageDataset': tuple(o for o in _PAIRED
                                if o.name in ('dataroot_lq', 'meta_info_file', 'color', 'mean', 'std')),
    'RealESRGANDataset': _REALESRGAN,
    'DASRDataset': _REALESRGAN,
}
# Datasets whose training phase also carries the degradation kernel keys and the step options.
ON_THE_FLY_DATASETS = ('RealESRGANDataset', 'DASRDataset')
TRAIN_DATASET_EXTRA = _step('datasets.train')

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
    extra = DEGRADATION_DATASET + TRAIN_DATASET_EXTRA if phase == 'train' else ()
    return LOADER + own + extra


def known_dataset_keys(dataset_type):
    """Every key a block of this built-in type may hold (any phase), or None: for the dataset grid."""
    options = dataset_options(dataset_type, 'train')
    return None if options is None else {o.name for o in options}


def _fill(node, section):
    for o in SECTIONS[section]:
        if o.fill and o.default is not None and node.get(o.name) is None:
            node[o.name] = o.default
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
    for name, options in DATASET_TYPES.items():
        for o in options + DEGRADATION_DATASET + TRAIN_DATASET_EXTRA:
            yield f'datasets.{name}.{o.name}', o
