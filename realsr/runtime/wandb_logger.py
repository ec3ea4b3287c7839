"""Weights & Biases logging (``logger.wandb``), an optional extra: ``pip install realsr[wandb]``.

BasicSR's keys and run settings: ``project`` (``~``: no wandb at all, silently), ``resume_id``
(continue that run: ``resume='allow'``; otherwise a new run, ``resume='never'``), the run named
after the experiment with the options as its config, rank 0 only, nothing in debug runs. Unlike
BasicSR, which only mirrors tensorboard (``sync_tensorboard=True``), realsr logs to wandb directly:
the same scalars tensorboard gets (losses, lr, validation metrics, same tags and steps) and the
validation images. Direct logging does not depend on tensorboard being on, nor on wandb patching
whichever tensorboard writer is installed, and an offline run holds the values themselves.
``entity`` (user or team) is passed on when set.

wandb is imported only when a run is configured: it takes seconds to import.
"""
import glob
import importlib.util
import logging
import os

from realsr import compat

logger = logging.getLogger('realsr')

INSTALL_HINT = "pip install 'realsr[wandb]'"
# At most this many validation images per dataset are sent per validation (the first in name order).
MAX_IMAGES_PER_DATASET = 4


def wandb_options(opt):
    return (opt.get('logger') or {}).get('wandb') or {}


def wandb_problems(opt):
    """Option problems: ``logger.wandb.project`` set while wandb cannot be imported."""
    project = wandb_options(opt).get('project')
    if project is not None and importlib.util.find_spec('wandb') is None:
        return [f"'logger.wandb.project' is {project!r} but wandb is not installed: {INSTALL_HINT} "
                '(or set project: ~ for no wandb logging)']
    return []


class WandbLogger:
    """A wandb run seen as a scalar sink (``add_scalar`` like tensorboard's writer) that also takes
    the validation images."""

    def __init__(self, run):
        self.run = run

    def add_scalar(self, tag, value, step):
        self.run.log({tag: float(value)}, step=int(step))

    def log_validation_images(self, visualization_dir, current_iter):
        """The images validation saved at ``current_iter`` (``<img>/<img>_<iter>.png``), as
        ``val_images/<img>``."""
        import wandb
        paths = sorted(glob.glob(os.path.join(glob.escape(visualization_dir), '*', f'*_{current_iter}.png')))
        images = {f'val_images/{os.path.basename(os.path.dirname(p))}': wandb.Image(p)
                  for p in paths[:MAX_IMAGES_PER_DATASET]}
        if images:
            self.run.log(images, step=int(current_iter))

    def close(self):
        self.run.finish()


def init_wandb_logger(opt):
    """The run of ``logger.wandb`` on rank 0, else ``None`` (project unset, a debug run, other ranks)."""
    from realsr.runtime.dist import get_dist_info
    wandb_opt = wandb_options(opt)
    project = wandb_opt.get('project')
    if project is None or compat.is_debug_run(opt) or get_dist_info()[0] != 0:
        return None
    try:
        import wandb
    except ImportError as err:  # validation reports this first; a changed environment still gets the hint
        raise RuntimeError(f'logger.wandb.project is {project!r} but wandb cannot be imported: {INSTALL_HINT}') from err
    resume_id = wandb_opt.get('resume_id')
    if resume_id:
        logger.warning('Resuming the wandb run id=%s.', resume_id)
    # no resume_id: wandb draws a new id (BasicSR drew it itself with resume='never')
    run = wandb.init(id=str(resume_id) if resume_id else None, resume='allow' if resume_id else 'never',
                     name=str(opt['name']), config=opt, project=str(project), entity=wandb_opt.get('entity'))
    logger.info('wandb logging: run id=%s, project=%s.', run.id, project)
    return WandbLogger(run)
