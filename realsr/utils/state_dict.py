"""What every checkpoint reader asks of a state dict: DataParallel's ``module.`` prefix removed, and
how its keys and shapes differ from a network's (strict loading, ``--dry_run``, arch detection)."""


def strip_module_prefix(state_dict):
    """``state_dict`` without DataParallel/DDP's ``module.`` key prefix (BasicSR strips it too)."""
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state_dict.items()}


def state_dict_diff(expected, state):
    """``(missing, unexpected, mismatched)``: sorted keys of ``expected`` absent from ``state``, of
    ``state`` absent from ``expected``, and keys in both whose shapes differ (in ``expected``'s order)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in expected if k in state and tuple(expected[k].shape) != tuple(state[k].shape)]
    return missing, unexpected, mismatched
