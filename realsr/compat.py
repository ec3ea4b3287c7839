"""Name-based behaviours of other projects' option files, in one place.

Some option files switch features on through words in names rather than through keys. realsr keeps
these switches so the files run unchanged, but only here: each switch is documented below, and each
logs a line on the ``realsr`` logger when it acts, so a run never changes behaviour silently.

1. BasicSR's ``debug`` in the experiment ``name`` (``--debug`` prefixes ``debug_``): validation
   every 8 iterations, a log line every iteration, a checkpoint every 8 iterations, and no
   tensorboard or wandb logging.
2. Simple-Align's ``reg`` in both the run ``name`` and the training dataset's ``name``: the
   FeatureAlignment regularizer is switched on with the top-level ``weight`` (default 1) as its
   strength. The explicit form is ``regularizers: [{type: FeatureAlignment, weight: ...}]``.

Archs with the papers' names (``MSRResNet_details_dropoutlast_channel07``) are not switches: they
are registered classes (``realsr/archs/dropout_aliases_arch.py``).

This module imports nothing heavy: options, runtime, models and regularizers all use it.
"""
import logging

from realsr import option_defs as defs

logger = logging.getLogger('realsr')

# BasicSR's debug settings (basicsr/utils/options.py): how often to validate, log and save.
DEBUG_VAL_FREQ = 8
DEBUG_PRINT_FREQ = 1
DEBUG_SAVE_CHECKPOINT_FREQ = 8


# -- 1. BasicSR's `debug` in the experiment name ----------------------------------------------------
def is_debug_run(opt):
    """True when ``debug`` is in the experiment name: tensorboard and wandb then stay off."""
    return 'debug' in str(opt.get('name', ''))


def apply_debug_settings(opt):
    """BasicSR's debug frequencies, set in place when ``debug`` is in the name; returns whether
    the switch acted (and logged)."""
    if not is_debug_run(opt):
        return False
    if isinstance(opt.get('val'), dict):
        opt['val']['val_freq'] = DEBUG_VAL_FREQ
    if not isinstance(opt.get('logger'), dict):
        opt['logger'] = {}
    opt['logger']['print_freq'] = DEBUG_PRINT_FREQ
    opt['logger']['save_checkpoint_freq'] = DEBUG_SAVE_CHECKPOINT_FREQ
    logger.info("'debug' is in the experiment name %r (BasicSR's debug mode): validation every %d iterations, "
                'a log line every %d, a checkpoint every %d; no tensorboard or wandb logging.', str(opt['name']),
                DEBUG_VAL_FREQ, DEBUG_PRINT_FREQ, DEBUG_SAVE_CHECKPOINT_FREQ)
    return True


# -- 2. Simple-Align's `reg` in the run and dataset names, plus top-level `weight` -----------------
def _train_dataset_name(opt):
    for key, ds in (opt.get('datasets') or {}).items():
        if str(key).split('_')[0] == 'train' and isinstance(ds, dict):
            return str(ds.get('name', ''))
    return ''


def simple_align_regularizers(opt):
    """The regularizer option dicts that Simple-Align's own files switch on by name:
    ``[{'type': 'FeatureAlignment', 'weight': <top-level weight, default 1>}]`` when ``reg`` is
    in both the run name and the training dataset name, else ``[]`` (also when ``regularizers:``
    already lists a FeatureAlignment, so it is never added twice)."""
    if not ('reg' in str(opt.get('name', '')) and 'reg' in _train_dataset_name(opt)):
        return []
    if any(isinstance(r, dict) and r.get('type') == 'FeatureAlignment' for r in opt.get('regularizers') or []):
        logger.info("Simple-Align's legacy switch ('reg' in the run name and the training dataset name) not used: "
                    'regularizers: already lists a FeatureAlignment.')
        return []
    weight = float(defs.value(opt, defs.TOP_LEVEL, 'weight'))
    logger.info("Simple-Align's legacy switch ('reg' in the run name and the training dataset name) turned on "
                'FeatureAlignment with weight %s (top-level weight). The explicit form is the better way: '
                'regularizers: [{type: FeatureAlignment, weight: %s}]', weight, weight)
    return [{'type': 'FeatureAlignment', 'weight': weight}]
