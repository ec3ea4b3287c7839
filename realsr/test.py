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


def console_main():
    """The ``realsr-test`` console script: exit status 0 after a run. (Its wrapper calls
    ``sys.exit(console_main())``; ``main`` returns the results, which ``sys.exit`` would print and
    turn into status 1.)"""
    main()
    return 0


if __name__ == '__main__':
    main()
