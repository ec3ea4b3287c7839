"""The options of the training step, each defined once: where it lives in the option file, its
kind (as the option checker spells it), its default, its allowed values and a one-line doc.

The option checker (:mod:`realsr.option_schema`) takes the kinds and allowed values from here,
and :func:`read_step_options` reads the values with the same defaults, so an option of the step
can be neither accepted and ignored nor read and rejected. No torch import here: validating a
file must stay cheap.
"""
from dataclasses import dataclass

COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')


@dataclass(frozen=True)
class StepOption:
    section: str  # '' (top level), 'train' or 'datasets.train'
    key: str
    kind: str
    default: object
    doc: str
    choices: tuple = ()
    minimum: float = None

    @property
    def path(self):
        return f'{self.section}.{self.key}' if self.section else self.key


STEP_OPTIONS = (
    StepOption('', 'use_amp', 'bool', False,
               'automatic mixed precision: networks run under autocast (fp16, or bf16 with amp_bf16); '
               'losses, metrics and the degradations stay fp32'),
    StepOption('', 'amp_bf16', 'bool', False,
               'with use_amp, bfloat16 instead of float16 (no grad scaler; the only choice on a CPU)'),
    StepOption('', 'use_channels_last', 'bool', False,
               'networks and their inputs in channels_last memory format (checkpoints stay plain NCHW)'),
    StepOption('', 'use_compile', 'bool', False,
               'torch.compile net_g and net_d before the DDP wrap (EMA and validation stay eager)'),
    StepOption('', 'compile_mode', 'str', 'default', 'torch.compile mode', choices=COMPILE_MODES),
    StepOption('', 'cudnn_benchmark', 'bool', True,
               "cuDNN autotuning for the training step's fixed shapes; always off while the degradations and "
               'validation run (their shapes vary: each new one would be autotuned)'),
    StepOption('train', 'grad_clip', 'bool', False,
               'clip the gradient norm of every network group (G, D) to grad_clip_max_norm'),
    StepOption('train', 'grad_clip_max_norm', 'num', 1.0, 'the largest total gradient norm with grad_clip',
               minimum=0.0),
    StepOption('train', 'use_grad_clip', 'bool', None, "old name of train.grad_clip (BasicSR's), read as it"),
    StepOption('train', 'nonfinite_max_skips', 'int', 10,
               'optimizer steps are skipped while a loss or gradient is NaN/Inf; the run stops after this many '
               'consecutive skips', minimum=1),
    StepOption('datasets.train', 'accum_iter', 'int', 1,
               'micro-batches accumulated into one optimizer step (effective batch: batch_size_per_gpu x accum_iter '
               'x world size); an iteration is one optimizer step', minimum=1),
)


def step_option_kinds(section):
    """``{key: kind}`` of the step options of one section ('', 'train' or 'datasets.train')."""
    return {o.key: o.kind for o in STEP_OPTIONS if o.section == section}


def _section(opt, section):
    node = opt
    for part in filter(None, section.split('.')):
        node = (node or {}).get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def step_option_problems(opt):
    """Value problems of the step options (kinds are checked with the rest of the schema)."""
    problems = []
    for o in STEP_OPTIONS:
        value = _section(opt, o.section).get(o.key)
        if value is None or isinstance(value, bool) and o.kind != 'bool':
            continue
        if o.choices and value not in o.choices:
            problems.append(f"'{o.path}' must be one of {', '.join(o.choices)}, got {value!r}")
        if o.minimum is not None and isinstance(value, (int, float)) and value < o.minimum:
            problems.append(f"'{o.path}' must be at least {o.minimum:g}, got {value!r}")
    return problems


@dataclass(frozen=True)
class StepSettings:
    """The step options of one option file, defaults filled in."""
    use_amp: bool
    amp_bf16: bool
    use_channels_last: bool
    use_compile: bool
    compile_mode: str
    cudnn_benchmark: bool
    grad_clip: bool
    grad_clip_max_norm: float
    nonfinite_max_skips: int
    accum_iter: int


def read_step_options(opt):
    """The step settings of ``opt`` (a whole option dict); ``train.use_grad_clip`` is an alias of
    ``train.grad_clip``."""
    values = {}
    for o in STEP_OPTIONS:
        value = _section(opt, o.section).get(o.key)
        values[o.key] = o.default if value is None else value
    alias = values.pop('use_grad_clip')
    if _section(opt, 'train').get('grad_clip') is None and alias is not None:
        values['grad_clip'] = alias
    return StepSettings(**{k: (float(v) if k == 'grad_clip_max_norm' else v) for k, v in values.items()})
