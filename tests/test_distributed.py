"""RecBole's distributed mode for the plugin's models: 2 CPU processes over gloo, metrics over all users."""

import socket

import psutil
import pytest

from recbole_tema.errors import ConfigurationError
from recbole_tema.quick_start import build_trainer, load_data_and_model, run

SMALL = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "epochs": 1, "show_progress": False,
         "state": "WARNING", "eval_batch_size": 256}


def _free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_processes_evaluate_every_user_as_one_process_does(tmp_path):
    # Sampled candidates: the same draw in both runs, or the metrics would differ.
    config = {**SMALL, "data_path": str(tmp_path), "checkpoint_dir": str(tmp_path / "saved"),
              "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni100"}}
    result = run(model="TEMA", dataset="ml-100k-cd", config_dict=config, nproc=2, port=_free_port())
    test = result["test_result"]
    assert test["targets"] == 943 and test["targets/drama"] + test["targets/other"] == 943  # every user, once
    # The same weights in one process give the same test metrics: ranks gathered from both processes.
    config, model, _, train_data, _, test_data = load_data_and_model(result["saved_model_file"])
    assert config["single_spec"]
    single = build_trainer(config, model, train_data).evaluate(test_data, load_best_model=False)
    assert dict(single) == dict(test)


def test_a_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"Port {port} on localhost is not free"):
            run(model="TEMA", dataset="ml-100k-cd", config_dict={**SMALL, "data_path": str(tmp_path)}, nproc=2,
                port=port)


def test_a_failing_process_stops_the_run_and_leaves_no_process(tmp_path):
    config = {**SMALL, "data_path": str(tmp_path), "hidden_size": -1}
    with pytest.raises(ConfigurationError, match="a process of the distributed run failed: .*hidden_size must be"):
        run(model="TEMA", dataset="ml-100k-cd", config_dict=config, nproc=2, port=_free_port())
    workers = [child for child in psutil.Process().children(recursive=True)
               if "resource_tracker" not in " ".join(child.cmdline())]  # multiprocessing's own helper stays
    assert workers == []
