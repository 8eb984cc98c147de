"""Helpers shared by the tests: synthetic datasets, configs, model harness, raw-source fixtures.

Tests run with the working directory set to their tmp_path (tests/conftest.py), because RecBole
writes log/ and saved/ there; refer to repository files through ``REPO_ROOT``.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
