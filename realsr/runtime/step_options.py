"""The options of the training step, read together into one :class:`StepSettings`.

Their definitions (kind, default, allowed values, doc) are ``STEP_OPTIONS`` in
:mod:`realsr.option_defs`, which the option checker and the editor schema read too. No torch
import here: validating a file must stay cheap.
"""
from dataclasses import dataclass

from realsr.option_defs import STEP_OPTIONS


def _section(opt, section):
    node = opt
    for part in filter(None, section.split('.')):
        node = (node or {}).get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


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
    for section, options in STEP_OPTIONS.items():
        node = _section(opt, section)
        for o in options:
            value = node.get(o.name)
            values[o.name] = o.default if value is None else value
    alias = values.pop('use_grad_clip')
    if _section(opt, 'train').get('grad_clip') is None and alias is not None:
        values['grad_clip'] = alias
    return StepSettings(**{k: (float(v) if k == 'grad_clip_max_norm' else v) for k, v in values.items()})
