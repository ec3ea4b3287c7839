"""Testing: every ``test_*``/``val_*`` dataset of an option file, images saved, metrics
written per image and on average as CSV and as a Markdown table in the results folder
(:class:`realsr.engine.validator.Validator` does the work, sharded across ranks under a launcher)."""
import datetime
import logging
import os

import torch

from realsr.data import build_dataset
from realsr.data.loader import build_dataloader
from realsr.engine.dry_run import run_dry_run
from realsr.engine.out_of_memory import explain_out_of_memory
from realsr.engine.validator import Validator, write_results  # noqa: F401 (write_results: the tables' writer)
from realsr.runtime.dist import barrier
from realsr.runtime.logger import close_file_handlers, get_root_logger
from realsr.models import build_model
from realsr.option_defs import with_defaults
from realsr.options import make_exp_dirs, parse_options


def test_pipeline(root_path, argv=None):
    opt, args = parse_options(root_path, is_train=False, argv=argv)
    if args.dry_run:
        return run_dry_run(opt, args, is_train=False)
    torch.backends.cudnn.benchmark = False  # every test image has its own size: autotuning each is waste
    if opt['rank'] == 0:  # one rank archives and creates the folders; the others write into them
        make_exp_dirs(opt)
    barrier()
    log_file = os.path.join(opt['path']['log'], f"test_{opt['name']}_{datetime.datetime.now():%Y%m%d_%H%M%S}.log")
    logger = get_root_logger(log_file=log_file)
    loaders = []
    for phase, dataset_opt in sorted(opt['datasets'].items()):
        if phase.split('_')[0] not in ('test', 'val'):
            continue
        test_set = build_dataset(dataset_opt)
        loaders.append(build_dataloader(test_set, dataset_opt, opt['num_gpu'], opt['dist']))
        logger.info('Number of test images in %s: %d', dataset_opt['name'], len(test_set))
    model = build_model(opt)
    save_img = with_defaults(opt, 'val')['save_img']
    validator = Validator(opt)
    results = []
    for loader in loaders:  # under a launcher every rank tests its share of each set (see Validator)
        logger.info('Testing %s...', loader.dataset.opt['name'])
        with explain_out_of_memory(opt, 'testing'):
            results.append(validator.validate(model, loader, current_iter=opt['name'], save_img=save_img))
    if results and opt['rank'] == 0:
        paths = write_results(results, opt['path']['results_root'])
        logger.info('Metrics written to %s', ', '.join(paths))
        logging.getLogger('realsr').info('\n' + open(paths[2], encoding='utf-8').read())
    close_file_handlers()
    return results
