"""Train a model: ``python realsr/train.py -opt options/train/X.yml`` (or ``realsr-train``).

Multi-process: ``torchrun --nproc_per_node=N realsr/train.py -opt X.yml --launcher pytorch``.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make `import realsr` find this checkout
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _here:
        sys.path.pop(0)  # our module names (test.py, options.py ...) must not shadow others
    sys.path.insert(0, os.path.dirname(_here))

from realsr.engine import trainer  # noqa: E402
from realsr.engine.cli import run_pipeline  # noqa: E402


def main(argv=None):
    return run_pipeline(trainer.train_pipeline, argv)


def console_main():
    """The ``realsr-train`` console script: exit status 0 after a run. (Its wrapper calls
    ``sys.exit(console_main())``; ``main`` returns the model, which ``sys.exit`` would print and
    turn into status 1.)"""
    main()
    return 0


if __name__ == '__main__':
    main()
