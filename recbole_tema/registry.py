"""Model lookup: the plugin's models first, then RecBole's; a miss lists every available name."""

import importlib
import pkgutil

from recbole.model.abstract_recommender import AbstractRecommender

import recbole_tema.model
from recbole_tema.errors import ConfigurationError

_RECBOLE_KINDS = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def _model_in_module(module_path, name):
    """The recommender class called ``name`` (case-insensitive) in a module, or None."""
    try:
        if importlib.util.find_spec(module_path) is None:
            return None
        module = importlib.import_module(module_path)
    except ImportError:
        # exlib models need lightgbm / xgboost; RecBole reports their absence as the lookup error.
        return None
    for attribute in dir(module):
        candidate = getattr(module, attribute)
        if (
            attribute.lower() == name.lower()
            and isinstance(candidate, type)
            and issubclass(candidate, AbstractRecommender)
        ):
            return candidate
    return None


def plugin_model_names():
    names = []
    for info in pkgutil.iter_modules(recbole_tema.model.__path__):
        model = _model_in_module(f"recbole_tema.model.{info.name}", info.name)
        if model is not None:
            names.append(model.__name__)
    return sorted(names)


def recbole_model_names():
    names = set()
    for kind in _RECBOLE_KINDS:
        try:
            package = importlib.import_module(f"recbole.model.{kind}")
        except ImportError:
            continue
        for info in pkgutil.iter_modules(package.__path__):
            model = _model_in_module(f"recbole.model.{kind}.{info.name}", info.name)
            if model is not None:
                names.add(model.__name__)
    return sorted(names)


def get_model(name):
    """The model class called ``name``: a plugin model if there is one, else RecBole's."""
    module_name = name.lower()
    model = _model_in_module(f"recbole_tema.model.{module_name}", name)
    for kind in _RECBOLE_KINDS:
        if model is not None:
            break
        model = _model_in_module(f"recbole.model.{kind}.{module_name}", name)
    if model is None:
        raise ConfigurationError(
            f"Model [{name}] does not exist. Plugin models: {', '.join(plugin_model_names())}. "
            f"RecBole models: {', '.join(recbole_model_names())}."
        )
    return model

