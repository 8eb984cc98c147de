"""Bad datasets, settings and checkpoints stop with one clear line that names the file, key or item."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recbole_tema.compat import load_checkpoint
from recbole_tema.config import Config
from recbole_tema.errors import ConfigurationError
from recbole_tema.quick_start import load_data_and_model, prepare_data, run
from support.configs import tiny_config
from support.datasets import known_answer_dataset


def _copy(root, name, edit_item=None, edit_inter=None):
    """A copy of the known-answer dataset as ``name``, its .item / .inter lines passed through the edits."""
    known_answer_dataset(root, name="ka", n_users=20, length=6)
    folder = Path(root) / name
    folder.mkdir(exist_ok=True)
    for suffix, edit in (("item", edit_item), ("inter", edit_inter)):
        lines = (Path(root) / "ka" / f"ka.{suffix}").read_text().splitlines()
        (folder / f"{name}.{suffix}").write_text("\n".join(edit(lines) if edit else lines) + "\n")
    return name


def _prepare(root, name, model="TEMA", **overrides):
    return prepare_data(Config(model=model, dataset=name, config_dict=tiny_config(root, **overrides)))


def test_a_dataset_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigurationError, match=r"Dataset \[nosuch\] not found: no file .*nosuch.inter"):
        _prepare(tmp_path, "nosuch")


def test_an_empty_inter_file(tmp_path):
    name = _copy(tmp_path, "empty", edit_inter=lambda lines: lines[:1])
    with pytest.raises(ConfigurationError, match="empty.inter has a header but no interaction"):
        _prepare(tmp_path, name)


def test_an_item_without_a_domain_is_named_when_the_dataset_loads(tmp_path):
    # 'a3' loses its domain: it is a history item of some users and a target of others.
    name = _copy(tmp_path, "nodom", edit_item=lambda lines: [line.replace("a3\ta", "a3\t") for line in lines])
    with pytest.raises(ConfigurationError, match=r"nodom.item: 1 item\(s\) of the interactions have no `domain`, e.g. \['a3'\]"):
        _prepare(tmp_path, name)


def test_ragged_vectors_are_refused(tmp_path):
    def add_vectors(lines):
        widths = {"a5": 3}  # one item's vector is shorter than the others' 4
        return [lines[0] + "\ttext_emb:float_seq"] + [
            line + "\t" + " ".join(["0.5"] * widths.get(line.split("\t")[0], 4)) for line in lines[1:]]

    name = _copy(tmp_path, "ragged", edit_item=add_vectors)
    with pytest.raises(ConfigurationError, match=r"column \[text_emb\] has vectors of 2 lengths \[3, 4\]: 1 item\(s\) "
                                                 r"differ from the usual 4, e.g. \['a5'\]"):
        _prepare(tmp_path, name)


def test_a_user_without_a_profile_row_is_refused_not_dropped(tmp_path):
    known_answer_dataset(tmp_path, name="prof", n_users=20, length=6, llm={"item", "domain", "user"})
    user_file = tmp_path / "prof" / "prof.user"
    lines = user_file.read_text().splitlines()
    user_file.write_text("\n".join(line for line in lines if not line.startswith("u7\t")) + "\n")
    with pytest.raises(ConfigurationError, match=r"prof\.user: 1 user\(s\) of prof\.inter have no row, e\.g\. \['u7'\]"):
        _prepare(tmp_path, "prof", model="LLM4CDSR")


def test_a_dataset_without_domains_runs_as_an_ordinary_sequential_dataset(tmp_path):
    name = _copy(tmp_path, "plain", edit_item=lambda lines: [line.split("\t")[0] for line in lines])
    result = run(model="SASRec", dataset=name, config_dict=tiny_config(tmp_path, hidden_size=8, inner_size=8, n_layers=1,
                                                                        valid_metric="MRR@10"))
    assert "hit@10" in result["test_result"] and "targets" not in result["test_result"]  # RecBole's own evaluation
    with pytest.raises(ConfigurationError, match=r"has no item field \[domain\]"):  # TEMA says what is missing
        run(model="TEMA", dataset=name, config_dict=tiny_config(tmp_path))


def test_users_with_a_single_interaction_are_counted(tmp_path, caplog):
    name = _copy(tmp_path, "short", edit_inter=lambda lines: lines + ["lonely\ta1\t5"])
    _prepare(tmp_path, name, state="INFO")
    assert "1 of 21 users of [short] have a single interaction" in caplog.text


@pytest.mark.parametrize("key,value", [("hidden_size", -1), ("n_heads", 0), ("MAX_ITEM_LIST_LENGTH", 2.5),
                                       ("train_batch_size", "many")])
def test_invalid_sizes_name_their_key(tmp_path, key, value):
    known_answer_dataset(tmp_path, n_users=10, length=6)
    with pytest.raises(ConfigurationError, match=f"{key} must be a positive integer"):
        Config(model="TEMA", dataset="ka", config_dict=tiny_config(tmp_path, **{key: value}))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated"])
def test_unreadable_checkpoints_are_named(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=r"Checkpoint \[.*model.pth\] cannot be read"):
        load_data_and_model(path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_checkpoint(tmp_path / "gone.pth")


def test_a_truncated_checkpoint_of_a_real_run(tmp_path):
    known_answer_dataset(tmp_path, n_users=20, length=6)
    saved = Path(run(model="TEMA", dataset="ka", config_dict=tiny_config(tmp_path, hidden_size=8, inner_size=8,
                                                                        n_layers=1))["saved_model_file"])
    half = tmp_path / "half.pth"
    half.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ConfigurationError, match="truncated"):
        load_data_and_model(half)


def test_run_recbole_prints_one_line_and_the_traceback_only_when_verbose(tmp_path):
    shutil.rmtree(tmp_path / "nosuch", ignore_errors=True)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    command = [sys.executable, "-m", "recbole_tema", "--model=TEMA", "--dataset=nosuch", f"--config_files={config_file}"]
    quiet = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert "run_recbole: error: Dataset [nosuch] not found" in quiet.stderr
    verbose = subprocess.run(command + ["--verbose"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
