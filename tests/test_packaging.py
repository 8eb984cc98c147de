"""What a normal (non-editable) install gets: the wheel holds every module and data file of both packages.

An editable install imports from the source tree and once hid a package (no ``__init__.py``) that a
normal install left out; these tests build the real wheel instead.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import REPO_ROOT

PACKAGES = ("recbole_tema", "atomic_data_builders")
# Work folders of a checkout (top level only: `properties/dataset/` is source) and build leftovers anywhere.
NOT_SOURCE_AT_TOP = {".git", ".venv", "build", "dist", "dataset", "saved", "log", "log_tensorboard", "benchmarks"}
NOT_SOURCE_ANYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info")


def _not_source(folder, names):
    ignored = set(NOT_SOURCE_ANYWHERE(folder, names))
    if Path(folder) == REPO_ROOT:
        ignored |= NOT_SOURCE_AT_TOP & set(names)
    return ignored


def _copy_source(destination):
    shutil.copytree(REPO_ROOT, destination, ignore=_not_source)
    return destination


def _build_wheel(source, out_dir):
    """(returncode, output); the wheel lands in ``out_dir``. No isolation: uses this environment's setuptools."""
    process = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out_dir), str(source)],
        capture_output=True,
        text=True,
    )
    return process.returncode, process.stdout + process.stderr


def _shipped_files():
    """Every .py and .yaml under the two packages of the source tree, as wheel paths."""
    files = set()
    for package in PACKAGES:
        for pattern in ("*.py", "*.yaml"):
            files |= {
                path.relative_to(REPO_ROOT).as_posix()
                for path in (REPO_ROOT / package).rglob(pattern)
                if "__pycache__" not in path.parts
            }
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """(file names in the wheel, its entry_points.txt)."""
    source = _copy_source(tmp_path_factory.mktemp("src") / "recbole-tema")
    out_dir = tmp_path_factory.mktemp("wheel")
    code, output = _build_wheel(source, out_dir)
    assert code == 0, output
    (wheel,) = out_dir.glob("recbole_tema-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        return names, archive.read(entry_points).decode()


def test_wheel_holds_every_module_and_data_file(wheel):
    names, _ = wheel
    expected = _shipped_files()
    # the files the code opens by name must be among them
    assert "recbole_tema/properties/model/TEMA.yaml" in expected
    assert "recbole_tema/properties/dataset/ml-100k-cd.yaml" in expected
    assert "atomic_data_builders/enrich/prompts.yaml" in expected
    missing = sorted(expected - names)
    assert not missing, f"a normal install would lack: {missing}"


def test_wheel_installs_the_console_command(wheel):
    _, entry_points = wheel
    assert "run_recbole = recbole_tema.cli:main" in entry_points


def test_a_code_folder_without_init_stops_the_build(tmp_path):
    source = _copy_source(tmp_path / "recbole-tema")
    (source / "recbole_tema" / "evaluation" / "__init__.py").unlink()
    code, output = _build_wheel(source, tmp_path / "wheel")
    assert code != 0
    assert "recbole_tema/evaluation holds Python modules but no __init__.py" in output
