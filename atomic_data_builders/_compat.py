"""Stack fixes needed before importing CLIP or sentence-transformers.

The torchvision wheel pip picks next to the CPU torch build registers C++ operators (``nms``) at
import that the CPU torch lacks, so ``import torchvision`` fails, and with it ``import clip`` and
``sentence_transformers``. Empty stand-ins for the two registration modules let torchvision import;
the PIL transforms CLIP needs do not use those operators.
"""
import os
import sys
import types

_REGISTRATION_MODULES = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def apply_torchvision_fix() -> None:
    """Idempotent; does nothing once torchvision is imported (the stand-ins only matter before)."""
    if "torchvision" in sys.modules:
        return
    for name in _REGISTRATION_MODULES:
        sys.modules.setdefault(name, types.ModuleType(name))


def offline_hub() -> None:
    """No model hub is reachable at run time: make Hugging Face fail fast instead of retrying."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def prepare_model_imports() -> None:
    """Call before the first import of ``clip`` or ``sentence_transformers``."""
    apply_torchvision_fix()
    offline_hub()
