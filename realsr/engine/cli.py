"""What the command-line entry points share: run a pipeline from the current directory and turn
the errors a user can fix into one readable line and an exit status (docs/training.md, "Exit
statuses"), with the traceback kept in the log file only:

2 invalid option file (or a training state that does not fit it), 3 non-finite training, 4 dataset
error, 5 CUDA out of memory,
6 a distributed collective timed out (``dist_params.timeout``), 130/143 stopped by SIGINT/SIGTERM
after saving a resumable state (raised by the trainer as ``TrainingStopped``, a ``SystemExit``).
"""
import logging
import os
import sys

from realsr.data.errors import DATASET_ERROR_EXIT_STATUS, DatasetError
from realsr.engine.out_of_memory import OUT_OF_MEMORY_EXIT_STATUS, OutOfMemoryStop
from realsr.runtime.checkpoint import ResumeError
from realsr.runtime.dist import shutdown
from realsr.runtime.logger import LOGGER_NAME
from realsr.runtime.preemption import TrainingStopped
from realsr.runtime.train_step import NonFiniteError
from realsr.runtime.watchdog import TIMEOUT_EXIT_STATUS, CollectiveTimeout
from realsr.option_schema import OptionError


def run_pipeline(pipeline, argv=None):
    # The process group is destroyed after a finished run or a graceful stop, when every rank is done
    # with collectives. Not after an error: with NCCL, destroying after a timed-out collective can hang.
    try:
        result = _run_pipeline(pipeline, argv)
    except TrainingStopped:
        shutdown()
        raise
    shutdown()
    return result


def _run_pipeline(pipeline, argv=None):
    try:
        return pipeline(os.getcwd(), argv)
    except OptionError as err:
        print(f'realsr: the option file is not valid: {err}', file=sys.stderr)
        sys.exit(2)
    except NonFiniteError as err:
        print(f'realsr: {err}', file=sys.stderr)
        sys.exit(3)
    except ResumeError as err:  # raised before anything of the experiment is written
        print(f'realsr: cannot resume: {err}', file=sys.stderr)
        sys.exit(2)
    except DatasetError as err:
        _stop(f'dataset error: {one_line(err)}', err, DATASET_ERROR_EXIT_STATUS)
    except OutOfMemoryStop as err:
        _stop(str(err), err, OUT_OF_MEMORY_EXIT_STATUS)
    except CollectiveTimeout as err:
        _stop(str(err), err, TIMEOUT_EXIT_STATUS)


def one_line(err):
    """The error's own message. An error raised in a data-loader worker is re-raised by torch with
    the worker's traceback in its message; its last line is the original message."""
    text = str(err).strip()
    if '\n' not in text:
        return text
    last = text.splitlines()[-1].strip()
    prefix = f'{type(err).__module__}.{type(err).__qualname__}: '
    return (last[len(prefix):] if last.startswith(prefix) else last) + ' (in a data loader worker)'


def _stop(message, err, status):
    log_traceback_to_files(err)
    print(f'realsr: {message}', file=sys.stderr)
    sys.exit(status)


def log_traceback_to_files(err):
    """The traceback of ``err`` into the log files of the realsr logger, not onto the console."""
    logger = logging.getLogger(LOGGER_NAME)
    record = logger.makeRecord(LOGGER_NAME, logging.ERROR, __file__, 0, 'stopped by %s', (type(err).__name__,),
                               (type(err), err, err.__traceback__))
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
