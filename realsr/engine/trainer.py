"""The iteration-based training loop (BasicSR's ``train_pipeline``), resumable exactly.

An interrupted run resumed with ``--auto_resume`` continues with the same weights, optimizer
and scheduler states, random generator states and position in the epoch, so on CPU it ends
bit-identical to an uninterrupted run.
"""
import contextlib
import datetime
import math
import os
import signal
import time

import torch
from tqdm import tqdm

from realsr import compat
from realsr import option_defs as defs
from realsr.data import build_dataset
from realsr.data.loader import build_dataloader, gpus_per_process, make_prefetcher
from realsr.data.sampler import EnlargedSampler
from realsr.engine.dry_run import run_dry_run
from realsr.engine import resume
from realsr.engine.out_of_memory import explain_out_of_memory
from realsr.engine.validator import Validator
from realsr.runtime import checkpoint, model_files
from realsr.runtime.dist import barrier, dist_timeout, get_dist_info
from realsr.runtime.logger import (MessageLogger, close_file_handlers, get_root_logger, hold_log_records,
                                   init_tb_logger)
from realsr.runtime.preemption import StopRequest, TrainingStopped
from realsr.runtime.rng import capture_rng_state, restore_rng_state
from realsr.runtime.wandb_logger import init_wandb_logger
from realsr.runtime.watchdog import (CollectiveTimeout, Watchdog, describe_phase, is_collective_timeout,
                                     timeout_message)
from realsr.models import build_model
from realsr.options import archive_existing, copy_opt_file, make_exp_dirs, parse_options

# Fault injection for the exact-resume tests: the process SIGKILLs itself right after the
# checkpoint of this iteration is written, like a job killed by a scheduler.
_KILL_AFTER_ITER_ENV = 'REALSR_TEST_KILL_AFTER_ITER'


def load_resume_state(opt):
    """The training state to resume from: the latest one with ``--auto_resume``, else
    ``path.resume_state``. Points ``path.pretrain_network_*`` at the matching network files."""
    path = opt['path']
    resume_path = None
    if opt.get('auto_resume'):  # the newest complete, readable checkpoint; rank 0 decides for all
        resume_path = resume.find_auto_resume_state(opt)
    if resume_path is None:
        resume_path = path.get('resume_state')
    if resume_path is None:
        return None
    state = resume.read_state_for_this_rank(resume_path, opt)  # refused if it does not fit; this rank's part
    path['resume_state'] = resume_path
    resume_iter = state['iter']
    ignore = path.get('ignore_resume_networks') or []
    for key in opt:
        if key.startswith('network_') and key not in ignore:
            basename = key.replace('network_', '')
            # the format the run saved in (.pth or .safetensors); a missing file names the .pth
            path[f'pretrain_{key}'] = (model_files.network_file(path['models'], f'net_{basename}', resume_iter)
                                       or os.path.join(path['models'], f'net_{basename}_{resume_iter}.pth'))
            if path.get(f'param_key_{basename}') == 'params_ema':
                path[f'param_key_{basename}'] = 'params'
            path[f'strict_load_{basename}'] = True
    return state


def create_train_val_dataloaders(opt, logger):
    train_loader = train_sampler = None
    val_loaders = []
    rank, world_size = opt['rank'], opt['world_size']
    for phase, dataset_opt in opt['datasets'].items():
        if phase.split('_')[0] == 'train':
            ratio = defs.value(dataset_opt, defs.LOADER, 'dataset_enlarge_ratio')
            train_set = build_dataset(dataset_opt)
            train_sampler = EnlargedSampler(train_set, world_size, rank, ratio, seed=int(opt['manual_seed']))
            train_loader = build_dataloader(train_set, dataset_opt, opt['num_gpu'], opt['dist'], train_sampler,
                                            seed=int(opt['manual_seed']))
            batch = dataset_opt['batch_size_per_gpu'] * gpus_per_process(opt['num_gpu'], opt['dist'])
            accum_iter = defs.value(dataset_opt, defs.TRAIN_DATASET_EXTRA, 'accum_iter')
            batches_per_epoch = len(train_sampler) // batch
            iters_per_epoch = max(batches_per_epoch // accum_iter, 1)  # an iteration may span two epochs
            if batches_per_epoch == 0:
                raise ValueError(f"datasets.{phase}: {len(train_sampler)} sample(s) per epoch on this process "
                                 f'is fewer than batch_size_per_gpu {batch}; add images or raise dataset_enlarge_ratio')
            total_iters = int(opt['train']['total_iter'])
            total_epochs = math.ceil(total_iters / iters_per_epoch)
            logger.info('Training statistics:\n\tNumber of train images: %d\n\tDataset enlarge ratio: %d\n\t'
                        'Batch size per gpu: %d\n\tAccumulated micro-batches per step: %d\n\t'
                        'World size (gpu number): %d\n\tRequire iter number per epoch: %d\n\t'
                        'Total epochs: %d; iters: %d.', len(train_set), ratio, dataset_opt['batch_size_per_gpu'],
                        accum_iter, world_size, iters_per_epoch, total_epochs, total_iters)
        elif phase.split('_')[0] in ('val', 'test'):
            val_set = build_dataset(dataset_opt)
            val_loaders.append(build_dataloader(val_set, dataset_opt, opt['num_gpu'], opt['dist']))
            logger.info('Number of val images/folders in %s: %d', dataset_opt['name'], len(val_set))
    if train_loader is None:
        raise ValueError("datasets has no 'train' entry")
    return train_loader, train_sampler, val_loaders


@contextlib.contextmanager
def cudnn_autotune(enabled):
    """cuDNN's benchmark mode on or off for a block: on for the training step's fixed shapes, off
    for the degradations (randomly resized batches) and validation (every image its own size),
    where each new shape would be autotuned for a single use."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _validate_all(validator, model, val_loaders, current_iter, save_img):
    """Every rank validates its share of each set; the gather inside is where the ranks meet again."""
    with cudnn_autotune(False):
        validator.validate_all(model, val_loaders, current_iter, save_img)  # keeps the RNG states
    for sink in validator.scalar_sinks:  # wandb also takes the images just saved
        if save_img and hasattr(sink, 'log_validation_images'):
            sink.log_validation_images(validator.opt['path']['visualization'], current_iter)


def train_pipeline(root_path, argv=None):
    opt, args = parse_options(root_path, is_train=True, argv=argv)
    if args.dry_run:
        return run_dry_run(opt, args, is_train=True)
    opt['root_path'] = root_path
    rank, _ = get_dist_info()

    # A resume is validated (the state, its networks, its optimizer shapes) before anything of the
    # experiment is written: the log file, the option-file copy and tensorboard come after it.
    logger = get_root_logger()
    hold_log_records()
    resume_state = load_resume_state(opt)
    if resume_state is None and rank == 0:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and not compat.is_debug_run(opt):
            archive_existing(os.path.join(root_path, 'tb_logger', opt['name']))
    barrier()
    logger.info('realsr training: torch %s, %s', torch.__version__, opt['device'])
    try:
        model = build_model(opt)
    except checkpoint.NetworkMismatchError as err:
        if resume_state is None:
            raise
        raise checkpoint.ResumeError(f"the network files of {opt['path']['resume_state']} do not fit the option "
                                     f"file's networks: {err}") from err
    if resume_state is not None:
        model.resume_training(resume_state)  # refused if the optimizer states do not fit the parameters

    if rank == 0:
        copy_opt_file(args.opt, opt['path']['experiments_root'])
        checkpoint.remove_stale_temp_files([opt['path']['models'], opt['path']['training_states']])
    log_file = os.path.join(opt['path']['log'], f"train_{opt['name']}_{datetime.datetime.now():%Y%m%d_%H%M%S}.log")
    logger = get_root_logger(log_file=log_file)
    tb_logger = None
    if opt['logger'].get('use_tb_logger') and not compat.is_debug_run(opt) and rank == 0:
        tb_logger = init_tb_logger(os.path.join(root_path, 'tb_logger', opt['name']))
    wandb_logger = init_wandb_logger(opt)  # None unless logger.wandb.project is set (rank 0)

    train_loader, train_sampler, val_loaders = create_train_val_dataloaders(opt, logger)
    validator = Validator(opt, [tb_logger, wandb_logger])

    epoch, current_iter, batches_done = 0, 0, 0
    if resume_state is not None:
        validator.load_state_dict(resume_state.get('best_metric_results'))
        epoch, current_iter = resume_state['epoch'], resume_state['iter']
        batches_done = resume_state.get('batches_done', 0)
        if 'rng' in resume_state:
            restore_rng_state(resume_state['rng'])
        else:
            logger.warning('The training state has no RNG states (written by BasicSR?): the resumed run will '
                           'not be bit-identical to an uninterrupted one.')
        logger.info('Resuming training from epoch: %d, iter: %d.', epoch, current_iter)

    total_iters = int(opt['train']['total_iter'])
    warmup_iter = opt['train']['warmup_iter']  # defaults filled from realsr/option_defs.py
    print_freq = opt['logger']['print_freq']
    save_freq = opt['logger']['save_checkpoint_freq']
    val_opt = opt.get('val')
    train_opt = opt['datasets']['train']
    batch_size = train_loader.batch_size
    accum_iter = model.train_step.accum_iter
    prefetcher = make_prefetcher(train_loader, train_opt, model.device)
    msg_logger = MessageLogger(opt, current_iter, tb_logger, model.device, wandb_logger=wandb_logger)
    kill_after = int(os.environ.get(_KILL_AFTER_ITER_ENV, 0))
    compiled = model.compile_nets

    def next_batch():
        """The next training batch, into the next epoch when this one is spent."""
        nonlocal epoch, batches_done
        data = prefetcher.next()
        if data is None:
            epoch, batches_done = epoch + 1, 0
            train_sampler.set_epoch(epoch)
            prefetcher.reset()
            data = prefetcher.next()
        batches_done += 1
        return data

    logger.info('Start training from epoch: %d, iter: %d', epoch, current_iter)
    if accum_iter > 1:
        logger.info('Gradient accumulation: %d micro-batches of %d per optimizer step (an iteration).',
                    accum_iter, batch_size)
    # A stop request (SIGTERM/SIGINT, a dead launcher) ends the run after its iteration, with a save.
    # Installed before the loader's workers fork: they inherit the handler, which ignores it there.
    stop = StopRequest(logger).install()
    watchdog = Watchdog(timeout=dist_timeout(opt.get('dist_params')) if opt['dist'] else None, rank=rank,
                        logger=logger).start()

    def save_state():
        """The periodic save, also the one a graceful stop makes: resumable exactly."""
        with watchdog.phase('save'):
            model.train_step.check(current_iter)
            logger.info('Saving models and training states.')
            model.save(epoch, current_iter, extra_state={'best_metric_results': validator.state_dict()},
                       rank_state={'batches_done': batches_done, 'rng': capture_rng_state()})
            barrier()

    pbar = tqdm(total=total_iters, initial=current_iter, unit='it', desc=str(opt['name']), disable=rank != 0,
                dynamic_ncols=True, mininterval=1.0)
    try:
        train_sampler.set_epoch(epoch, start=batches_done * batch_size)
        prefetcher.reset()
        iter_start = time.time()
        start_iter = current_iter
        while current_iter < total_iters:
            current_iter += 1
            first = current_iter == start_iter + 1
            model.update_learning_rate(current_iter, warmup_iter=warmup_iter)
            data_time = 0.0
            try:
                for _ in range(accum_iter):  # one optimizer step
                    fetch_start = time.time()
                    with watchdog.phase('data'):
                        train_data = next_batch()
                    data_time += time.time() - fetch_start
                    with watchdog.phase('step'), explain_out_of_memory(opt, 'the training step'):
                        with cudnn_autotune(False):  # the degradations run here
                            model.feed_data(train_data)
                        with cudnn_autotune(model.step_settings.cudnn_benchmark):
                            model.optimize_parameters(current_iter)
            except Exception as err:
                if compiled and first and type(err).__module__.startswith(('torch._dynamo', 'torch._inductor')):
                    raise RuntimeError(f'torch.compile failed at the first training step ({type(err).__name__}: '
                                       f'{err}); set use_compile: false to train eager.') from err
                raise
            iter_time = time.time() - iter_start
            pbar.update(1)
            if first:
                if compiled:
                    logger.info('First training step, with torch.compile compiling: %.1f s.', iter_time)
                msg_logger.reset_start_time(current_iter)  # speed and ETA leave out start-up costs
            if current_iter % print_freq == 0:
                model.train_step.check(current_iter)
                current_log = model.get_current_log()
                log_vars = {'epoch': epoch, 'iter': current_iter, 'lrs': model.get_current_learning_rate(),
                            'time': iter_time, 'data_time': data_time}
                log_vars.update(current_log)
                msg_logger(log_vars)
                pbar.set_postfix({k: f'{v:.3e}' for k, v in current_log.items()})
            # validation before the save of the same iteration, so that the saved state holds its
            # best-metric record (BasicSR's recipes validate and save at the same iterations)
            if val_opt is not None and val_loaders and current_iter % val_opt['val_freq'] == 0:
                with watchdog.phase('validation'), explain_out_of_memory(opt, 'validation'):
                    _validate_all(validator, model, val_loaders, current_iter, val_opt['save_img'])
            if current_iter % save_freq == 0:
                save_state()
                if kill_after and current_iter >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
            with watchdog.phase('collective:stop_flag'):  # every rank stops at the same iteration
                stop_signal = stop.agreed(opt['world_size'], dist_timeout(opt.get('dist_params')))
            if stop_signal:
                if current_iter % save_freq:
                    save_state()
                logger.info('stopped by %s at iter %d; resume with --auto_resume', signal.Signals(stop_signal).name,
                            current_iter)
                if tb_logger is not None:
                    tb_logger.close()
                raise TrainingStopped(stop_signal, current_iter)
            iter_start = time.time()
    except RuntimeError as err:
        if is_collective_timeout(err, watchdog.failed_in):  # a frozen or dead rank: name the option to raise
            where = f"rank {rank}: {describe_phase(watchdog.failed_in or 'collective:?')}"
            raise CollectiveTimeout(timeout_message(watchdog.timeout, where)) from err
        raise
    finally:  # an error must not leave a dangling progress bar, a watchdog or our signal handlers
        pbar.close()
        prefetcher.close()
        watchdog.stop()
        stop.restore()

    model.train_step.check(current_iter)
    elapsed = datetime.timedelta(seconds=int(time.time() - msg_logger.start_time))
    logger.info('End of training. Time consumed: %s', elapsed)
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)
    if val_opt is not None and val_loaders:
        with explain_out_of_memory(opt, 'validation'):
            _validate_all(validator, model, val_loaders, current_iter, val_opt['save_img'])
    for sink in (tb_logger, wandb_logger):
        if sink is not None:
            sink.close()
    close_file_handlers()
    return model
