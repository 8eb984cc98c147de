"""Fixes for RecBole 1.2.1 on today's stack (torch >= 2.6, numpy, ray), applied once on import.

Each fix is here because of a failure measured on this stack; see the README's "Stack" section.
"""

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

_APPLIED = False

# numpy 2 removed aliases that RecBole's Config (np.float_) and ray (np.bool8) still use.
_NUMPY_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_", "bool8": "bool_"}


def _restore_numpy_aliases():
    if np.lib.NumpyVersion(np.__version__) < "2.0.0":
        return
    for alias, target in _NUMPY_ALIASES.items():
        if not hasattr(np, alias):
            setattr(np, alias, getattr(np, target))


def _set_recbole_numpy_aliases():
    # RecBole's Config.__init__ defines np.float, np.int, ... (removed in numpy 1.24) and its Dataset
    # uses them. A checkpoint's Config is unpickled, not constructed, so a process that only reloads
    # a model (load_data_and_model, the explainer) needs them set here.
    from recbole.config import Config

    Config.compatibility_settings(None)


def _switch_off_anomaly_detection():
    # recbole/model/sequential_recommender/sine.py calls torch.autograd.set_detect_anomaly(True)
    # at import, and the package __init__ imports it: every model then trains ~2x slower.
    import recbole.model.sequential_recommender  # noqa: F401  (the import that turns it on)

    torch.autograd.set_detect_anomaly(False)


# RecBole 1.2.1's known, harmless deprecation warnings on pandas 2.x and torch 2.x, as
# (message regex, module regex of the RecBole line that triggers it). Each would print a block per
# run between the progress bars; other warnings, and these from any other module, still show.
RECBOLE_WARNINGS = (
    ("A value is trying to be set on a copy of a DataFrame or Series through chained assignment", r"recbole\.data\."),
    ("using <built-in function len> in Series.agg cannot aggregate", r"recbole\.data\."),
    (r"`torch\.cuda\.amp\.", r"recbole\.trainer\."),
)


def silence_recbole_warnings():
    for message, module in RECBOLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning, module=module)


def apply():
    """Apply every fix once; safe to call many times."""
    global _APPLIED
    if _APPLIED:
        return
    _restore_numpy_aliases()
    _set_recbole_numpy_aliases()
    silence_recbole_warnings()
    _switch_off_anomaly_detection()
    _APPLIED = True


def load_checkpoint(path, map_location=None):
    """Load a RecBole checkpoint written by this user's own training run.

    RecBole pickles its Config into checkpoints, which torch >= 2.6 refuses under its default
    ``weights_only=True``. Only call this on files the user made. A file that is missing, empty,
    truncated or not a checkpoint is a ConfigurationError that names it.
    """
    from recbole_tema.errors import ConfigurationError

    if not Path(path).is_file():
        raise ConfigurationError(f"Checkpoint [{path}] does not exist.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, ValueError, AttributeError, ImportError) as error:
        raise ConfigurationError(
            f"Checkpoint [{path}] cannot be read ({type(error).__name__}: {str(error)[:200]}): it is empty, "
            "truncated (was training stopped while it was written?) or not a RecBole checkpoint."
        ) from error
    if not isinstance(checkpoint, dict) or not {"state_dict", "config"} <= set(checkpoint):
        raise ConfigurationError(f"Checkpoint [{path}] is not a RecBole checkpoint (no state_dict and config).")
    return checkpoint
