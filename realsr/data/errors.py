"""Errors in the data a run reads: an empty or missing folder, GT/LQ files that do not pair or
do not match in size, a corrupt image.

Every one is a :class:`DatasetError` that names the file or folder, so the command line prints
it as one line (``realsr.engine.cli``) with the traceback kept in the log file. Each concrete
class also derives from the built-in error the code raised before (``ValueError``,
``FileNotFoundError``, ``ImageReadError``), so existing ``except`` clauses still work.
"""
import contextlib

from realsr.utils.img_util import ImageReadError

# Exit status of the command line for a dataset error (docs/training.md, "Exit statuses").
DATASET_ERROR_EXIT_STATUS = 4


class DatasetError(Exception):
    """Bad training or validation data; ``path`` is the file or folder at fault (when known)."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class DatasetValueError(DatasetError, ValueError):
    """An empty folder, mismatched sizes, unpaired keys."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A missing folder, meta file or image file."""


class DatasetReadError(DatasetError, ImageReadError):
    """An image file that cannot be read or decoded."""


@contextlib.contextmanager
def reading_item():
    """Turns the read errors of one dataset item into :class:`DatasetError` subclasses (still
    ``ImageReadError``/``FileNotFoundError``/``OSError``)."""
    try:
        yield
    except DatasetError:
        raise
    except FileNotFoundError as err:
        raise DatasetFileNotFoundError(str(err), err.filename) from err
    except ImageReadError as err:
        raise DatasetReadError(str(err), err.path) from err
    except OSError as err:
        raise DatasetReadError(str(err), err.filename) from err
