"""The stack fixes of recbole_tema.compat."""

import warnings

from recbole_tema import compat


def _shown(message, module):
    """Whether a FutureWarning with ``message``, raised from ``module``, reaches the user."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.silence_recbole_warnings()
        warnings.warn_explicit(message, FutureWarning, f"{module.replace('.', '/')}.py", 1, module=module)
    return bool(caught)


def test_recbole_known_warnings_are_silenced_and_only_those():
    chained = "A value is trying to be set on a copy of a DataFrame or Series through chained assignment using an inplace method."
    amp = "`torch.cuda.amp.GradScaler(args...)` is deprecated. Please use `torch.amp.GradScaler('cuda', args...)` instead."
    assert not _shown(chained, "recbole.data.dataset.dataset")
    assert not _shown(amp, "recbole.trainer.trainer")
    # the same message from the user's or the plugin's own code still shows, and so do RecBole's other warnings
    assert _shown(chained, "recbole_tema.data.builtin")
    assert _shown(chained, "my_script")
    assert _shown("something else is deprecated", "recbole.data.dataset.dataset")
