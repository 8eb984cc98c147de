import pytest


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    # RecBole writes log/, log_tensorboard/ and saved/ into the working directory.
    monkeypatch.chdir(tmp_path)
