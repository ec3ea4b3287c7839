"""Run utilities that models may use: checkpoints, distributed helpers, RNG, EMA, logging and the
shared training step. Nothing here imports models, the training loop or the option parser."""
