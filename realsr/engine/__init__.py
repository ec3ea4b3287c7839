"""The training engine: loop, checkpoints, distributed set-up, EMA, logging, validation."""
