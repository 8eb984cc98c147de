"""run_hyper: RecBole's HyperTuning through the plugin's pipeline, judged on validation only."""

import pytest
import yaml
from recbole.trainer import HyperTuning

from recbole_tema.evaluation.trainer import CrossDomainEvaluation
from recbole_tema.hyper import main as hyper_main
from support.configs import small_model_config
from support.datasets import known_answer_dataset


class Interrupted(Exception):
    pass


def test_grid_search_trains_every_trial_and_never_tests(tmp_path, monkeypatch):
    known_answer_dataset(tmp_path, name="ka")
    config_file = tmp_path / "fixed.yaml"
    config_file.write_text(yaml.safe_dump(small_model_config(tmp_path, model="TEMA", dataset="ka", epochs=2)))
    params_file = tmp_path / "tema.hyper"
    params_file.write_text("hidden_dropout_prob choice [0.1,0.3]\ntemperature choice [1.0]\n")
    phases = []
    evaluate = CrossDomainEvaluation.evaluate

    def recording_evaluate(self, *args, phase="test", **kwargs):
        phases.append(phase)
        return evaluate(self, *args, phase=phase, **kwargs)

    monkeypatch.setattr(CrossDomainEvaluation, "evaluate", recording_evaluate)
    output = tmp_path / "trials.md"
    assert hyper_main(["--params_file", str(params_file), "--config_files", str(config_file),
                       "--output_file", str(output)]) == 0

    assert phases and set(phases) == {"valid"}  # 2 trials x 2 epochs of validation, no test evaluation
    rows = [line for line in output.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 2
    assert sorted("hidden_dropout_prob=0.1" in row for row in rows) == [False, True]
    scores = [float(row.split("|")[3]) for row in rows]
    assert scores == sorted(scores, reverse=True) and all(0 < score <= 1 for score in scores)  # best MRR first
    assert all(row.split("|")[-3].strip() == "2" for row in rows)  # both trials ran their 2 epochs

    # Run again: the stored trials are taken, nothing is trained; another search is refused.
    phases.clear()
    assert hyper_main(["--params_file", str(params_file), "--config_files", str(config_file),
                       "--output_file", str(output)]) == 0
    assert phases == []
    again = [line for line in output.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [float(row.split("|")[3]) for row in again] == scores
    assert hyper_main(["--params_file", str(params_file), "--config_files", str(config_file), "--algo", "random",
                       "--output_file", str(output)]) == 2

    # The markdown follows the store at start-up, before any trial is visited (a search stopped at once keeps it).
    output.unlink()
    monkeypatch.setattr(HyperTuning, "run", lambda self: (_ for _ in ()).throw(Interrupted()))
    with pytest.raises(Interrupted):
        hyper_main(["--params_file", str(params_file), "--config_files", str(config_file), "--output_file", str(output)])
    listed = [line for line in output.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [float(row.split("|")[3]) for row in listed] == scores



def test_a_trial_stopped_midway_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    from recbole_tema import quick_start

    known_answer_dataset(tmp_path, name="ka")
    config_file = tmp_path / "fixed.yaml"
    config_file.write_text(yaml.safe_dump(small_model_config(tmp_path, model="TEMA", dataset="ka", epochs=4, stopping_step=10)))
    params_file = tmp_path / "tema.hyper"
    params_file.write_text("hidden_dropout_prob choice [0.1]\n")
    argv = ["--params_file", str(params_file), "--config_files", str(config_file),
            "--output_file", str(tmp_path / "trials.md"), "--resume_dir", str(tmp_path / "resume")]
    checkpointed = []
    record = quick_start.EpochCheckpoints.__call__

    def stopping_after_two(self, epoch_idx, valid_score):
        record(self, epoch_idx, valid_score)
        checkpointed.append(epoch_idx)
        if epoch_idx == 1 and not (tmp_path / "stopped").exists():
            (tmp_path / "stopped").touch()
            raise Interrupted  # as if the process were killed after its second epoch

    monkeypatch.setattr(quick_start.EpochCheckpoints, "__call__", stopping_after_two)
    with pytest.raises(Interrupted):
        hyper_main(argv)
    assert sorted(path.name for path in (tmp_path / "resume").glob("*/*")) == ["last.pth", "progress.json"]

    assert hyper_main(argv) == 0
    assert checkpointed == [0, 1, 2, 3]  # the second invocation trained epochs 3 and 4 only
    row = [line for line in (tmp_path / "trials.md").read_text().splitlines() if "hidden_dropout_prob=0.1" in line][0]
    assert row.split("|")[-3].strip() == "4"  # epochs counted over both invocations
    assert not any((tmp_path / "resume").glob("*/*"))  # the stored trial's checkpoints are gone
