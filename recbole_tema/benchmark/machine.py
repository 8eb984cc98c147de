"""Where a figure was measured: one line for every benchmark table."""

import os
import platform


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe_machine():
    """``GPU <name>`` where torch sees one, else the CPU model, its cores and torch's threads; Python's version."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        threads = f", {torch.get_num_threads()} torch threads" if torch is not None else ""
        device = f"CPU {_cpu_model()}, {os.cpu_count()} cores{threads}"
    return f"{device}, Python {platform.python_version()}"


def load_average():
    """The 1-minute load average (NaN where the platform has none): how busy the machine was."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
