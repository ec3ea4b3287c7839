"""What the command-line entry points share: run a pipeline from the current directory and turn
an invalid option file into a readable message and exit status 2 (no traceback)."""
import os
import sys

from realsr.runtime.train_step import NonFiniteError
from realsr.option_schema import OptionError


def run_pipeline(pipeline, argv=None):
    try:
        return pipeline(os.getcwd(), argv)
    except OptionError as err:
        print(f'realsr: the option file is not valid: {err}', file=sys.stderr)
        sys.exit(2)
    except NonFiniteError as err:
        print(f'realsr: {err}', file=sys.stderr)
        sys.exit(3)
