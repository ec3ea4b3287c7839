"""Test a model: ``python realsr/test.py -opt options/test/X.yml`` (or ``realsr-test``).

Runs every ``test_*``/``val_*`` dataset in the file; writes images to
``results/<name>/visualization`` and metrics to ``results/<name>/metrics*.csv|md``.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make `import realsr` find this checkout
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _here:
        sys.path.pop(0)
    sys.path.insert(0, os.path.dirname(_here))

from realsr.engine import tester  # noqa: E402
from realsr.engine.cli import run_pipeline  # noqa: E402


def main(argv=None):
    return run_pipeline(tester.test_pipeline, argv)


if __name__ == '__main__':
    main()
