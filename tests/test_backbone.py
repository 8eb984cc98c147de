"""run_recbole for plugin and built-in models: registry, configuration, checkpoints, stack fixes."""

import subprocess
import sys

import pytest
import yaml

from recbole_tema.config import PROPERTIES, Config
from recbole_tema.errors import ConfigurationError
from recbole_tema.quick_start import build_trainer, load_data_and_model, prepare_data, run
from recbole_tema.registry import get_model, plugin_model_names
from support.configs import tiny_config
from support.datasets import known_answer_dataset


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "recbole_tema", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_unknown_model_lists_the_available_names():
    with pytest.raises(ConfigurationError) as error:
        get_model("NoSuchModel")
    message = str(error.value)
    assert "NoSuchModel" in message and "SASRec" in message and "GRU4Rec" in message
    for name in plugin_model_names():
        assert name in message
    assert "lightgbm" not in message


def test_lookup_prefers_the_plugin_and_falls_back_to_recbole():
    assert get_model("SASRec").__module__ == "recbole.model.sequential_recommender.sasrec"
    for name in plugin_model_names():
        assert get_model(name).__module__.startswith("recbole_tema.model.")


def test_cli_reports_an_unknown_model(tmp_path):
    finished = _cli("--model=NoSuchModel", "--dataset=ka", cwd=tmp_path)
    assert finished.returncode == 2
    assert "NoSuchModel" in finished.stderr and "SASRec" in finished.stderr


@pytest.mark.parametrize("model", ["SASRec", "TEMA"])
def test_builtin_and_plugin_models_train_through_run_recbole(tmp_path, model):
    known_answer_dataset(tmp_path, n_users=40, length=8)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    finished = _cli(f"--model={model}", "--dataset=ka", f"--config_files={config_file}", "--epochs=1", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    table = finished.stdout.split("per target domain:")[1].splitlines()
    assert [line.split()[0] for line in table[1:] if line.strip()] == ["domain", "a", "b", "overall"]


def test_plugin_properties_load_and_user_values_override(tmp_path):
    config = Config(model="SASRec", dataset="ml-100k-cd", config_dict={"data_path": str(tmp_path)})
    assert config["valid_metric"] == "MRR"  # from the plugin's properties/dataset/ml-100k-cd.yaml
    assert config["cd_eval_negatives"] == {"valid": None, "test": None}
    assert config["cross_domain"] and "domain" in config["load_col"]["item"]  # known before it is built
    assert not (tmp_path / "ml-100k-cd").exists()  # a configuration writes nothing ...
    prepare_data(config)
    assert (tmp_path / "ml-100k-cd" / "ml-100k-cd.inter").is_file()  # ... the data step builds it on first use
    config = Config(model="SASRec", dataset="ml-100k-cd", config_dict={"data_path": str(tmp_path), "valid_metric": "NDCG@10"})
    assert config["valid_metric"] == "NDCG@10"


@pytest.mark.parametrize("model", plugin_model_names())
def test_every_plugin_model_ships_its_yaml_defaults(tmp_path, model):
    name = known_answer_dataset(tmp_path, n_users=10, length=6)
    config = Config(model=model, dataset=name, config_dict=tiny_config(tmp_path))
    defaults = yaml.load((PROPERTIES / "model" / f"{model}.yaml").read_text(), Loader=config.yaml_loader)
    rewritten_by_recbole = {"train_neg_sample_args", "eval_args"}
    for key, value in defaults.items():
        if key not in tiny_config(tmp_path) and key not in rewritten_by_recbole:
            assert config[key] == value, key


def test_cross_domain_dataset_defaults(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=10, length=6)
    config = Config(model="GRU4Rec", dataset=name, config_dict={"data_path": str(tmp_path), "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni99"}})
    assert config["cross_domain"]
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "domain"]}
    assert config["cd_eval_negatives"] == {"valid": 99, "test": 99}
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}  # RecBole gives full-sort loaders


def test_unsupported_eval_mode_is_refused(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=10, length=6)
    config_dict = tiny_config(tmp_path)
    config_dict["eval_args"]["mode"] = "pop100"
    with pytest.raises(ConfigurationError, match="pop100"):
        Config(model="SASRec", dataset=name, config_dict=config_dict)


def test_a_checkpoint_written_by_the_trainer_reloads(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=40, length=8)
    config_dict = tiny_config(tmp_path, epochs=2, hidden_size=16, inner_size=32, n_layers=1)
    config_dict["eval_args"]["mode"] = "uni10"
    result = run(model="SASRec", dataset=name, config_dict=config_dict)  # reloads the best epoch for test
    config, model, _, train_data, _, test_data = load_data_and_model(result["saved_model_file"])
    trainer = build_trainer(config, model, train_data)
    assert trainer.evaluate(test_data, load_best_model=False) == result["test_result"]


def test_anomaly_detection_is_switched_off():
    check = "import torch, {module}; print(torch.is_anomaly_enabled())"
    plain = subprocess.run([sys.executable, "-c", check.format(module="recbole.model.sequential_recommender")], capture_output=True, text=True)
    assert plain.stdout.strip() == "True"  # RecBole's own import turns it on ...
    fixed = subprocess.run([sys.executable, "-c", check.format(module="recbole_tema.quick_start")], capture_output=True, text=True)
    assert fixed.stdout.strip() == "False", fixed.stderr  # ... and the plugin's import turns it off
