"""Which training state a run resumes from, and whether it fits this run, decided before anything
of the experiment is written.

* ``--auto_resume`` takes the newest *complete and readable* checkpoint: its ``.state``, every
  network file it needs and, for a multi-process run, every rank's part. Newer ones that are not
  are skipped with a warning naming the file and why. Rank 0 decides and broadcasts its choice, so
  every rank resumes from the same iteration.
* A state is refused (:class:`ResumeError`) when it was written by a different number of processes
  or for another network type than the option file's; other network arguments are named in a
  warning, and the trainer refuses network files and optimizer states whose shapes do not fit.
* Each rank gets its own part of the state (RNG states, sampler position, degradation generator,
  pair pool) merged over the main file's, which holds rank 0's.
"""
import logging

from realsr.runtime import checkpoint
from realsr.runtime.checkpoint import ResumeError
from realsr.runtime.dist import broadcast_object, get_dist_info

logger = logging.getLogger('realsr')


def resume_network_labels(opt):
    """The networks a resume loads from ``models/`` (``network_<label>`` not in ``ignore_resume_networks``)."""
    ignore = opt['path'].get('ignore_resume_networks') or []
    return [key[len('network_'):] for key in opt if key.startswith('network_') and key not in ignore]


def find_auto_resume_state(opt):
    """Path of the newest usable training state in ``path.training_states``, or None (the same on every rank)."""
    path = opt['path']
    rank, _ = get_dist_info()
    found = None
    if rank == 0:
        found, _, skipped = checkpoint.find_resumable_state(path['training_states'], path['models'],
                                                            resume_network_labels(opt))
        if found is None and skipped:  # the old experiment folder is archived, not deleted
            logger.warning('--auto_resume: none of the %d training state(s) in %s is usable (see above): starting '
                           'from scratch.', len(skipped), path['training_states'])
        elif found is None:
            logger.info('--auto_resume: no training state in %s, starting from scratch.', path['training_states'])
        elif skipped:
            logger.warning('--auto_resume: resuming from %s, the newest complete checkpoint (%d newer one(s) '
                           'skipped, see above).', found, len(skipped))
    return broadcast_object(found)


def _arg_differences(key, saved, current):
    """Lines naming the arguments of ``network_<x>`` that differ between the state and the option file."""
    return [f'{key}.{arg}: {saved.get(arg)!r} in the state, {current.get(arg)!r} in the option file'
            for arg in sorted(set(saved) | set(current), key=str) if saved.get(arg) != current.get(arg)]


def check_state_fits(state, opt, state_path):
    """Raise :class:`ResumeError` when ``state`` cannot continue this run: another world size, or
    another network type than the option file's. Other arguments are named in a warning: some change
    no shape (``drop_path_rate``, ``use_checkpoint``, an init-only flag) and may differ; those that
    do are refused by the strict loading of the network files and the optimizer-shape check."""
    _, world_size = get_dist_info()
    saved_world = state.get('world_size')
    if saved_world is not None and int(saved_world) != world_size:
        raise ResumeError(f'{state_path} was written by {saved_world} process(es) (world size {saved_world}); this '
                          f'run has world size {world_size}. Every rank resumes its own random streams and '
                          f'share of the data, so resume with {saved_world} process(es), or start a new run '
                          'from its weights (path.pretrain_network_g).')
    ignore = opt['path'].get('ignore_resume_networks') or []
    network_specs = checkpoint.network_specs(opt)
    other_type, other_args = [], []
    for key, saved in sorted((state.get('networks') or {}).items()):
        if key in network_specs and key not in ignore:
            if saved.get('type') != network_specs[key].get('type'):
                other_type.append(f"{key}.type: {saved.get('type')} in the state, {network_specs[key].get('type')} "
                                  'in the option file')
            else:
                other_args += _arg_differences(key, saved, network_specs[key])
    if other_type:
        raise ResumeError(f"{state_path} was written for another network: {'; '.join(other_type)}. Resume with the "
                          'option file the run was started with, or start a new run from its weights '
                          '(path.pretrain_network_*).')
    if other_args:
        logger.warning('%s was written with other network arguments: %s.', state_path, '; '.join(other_args))
    return other_args


def read_state_for_this_rank(state_path, opt):
    """The training state at ``state_path`` as this rank resumes it: checked with
    :func:`check_state_fits`, with this rank's own part merged over the main file's entries."""
    state = checkpoint.load_training_state(state_path)
    check_state_fits(state, opt, state_path)
    rank, world_size = get_dist_info()
    if state.get('world_size') is None and world_size > 1:
        logger.warning('%s has no per-rank parts (written by BasicSR or an older realsr): every rank restores '
                       'rank 0\'s random states, so the resumed run is not bit-identical to an uninterrupted one.',
                       state_path)
    elif rank > 0:
        try:
            state.update(checkpoint.read_rank_state(state_path, rank))
        except Exception as err:
            raise ResumeError(f'cannot read the part of rank {rank} of {state_path}: {err}') from err
    return state
