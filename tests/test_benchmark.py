"""The side-by-side benchmark's code path on a tiny split-format slice: build, train, resume, tables, plot."""

import json
from pathlib import Path

import yaml

from recbole_tema.benchmark.__main__ import main as benchmark_main
from recbole_tema.benchmark.runner import Run
from support.raw_sources import write_split_rich

PUBLISHED = {"name": "ABXI (published)", "food": {"hit@5": 0.25, "hit@10": 0.32, "ndcg@10": 0.19, "mrr": 0.16},
             "kitchen": {"hit@5": 0.17, "hit@10": 0.24, "ndcg@10": 0.14, "mrr": 0.12}}


def _config(tmp_path):
    source = write_split_rich(tmp_path / "source", n_users=300)
    spec = {
        "source": str(source), "dataset": "fk", "work_dir": str(tmp_path / "work"),
        "results": str(tmp_path / "results" / "fk.md"), "ablation_results": str(tmp_path / "results" / "fk_ablation.md"),
        "plot": str(tmp_path / "results" / "fk.png"), "time_plot": str(tmp_path / "results" / "fk_time.png"),
        "state_dir": str(tmp_path / "results" / "runs"),
        "readme": {"file": str(tmp_path / "README.md"), "marker": "table"},
        "build_args": ["--no-clip-txt", "--no-clip-img", "--no-progress"],
        "protocols": ["uni10", "full"],
        "settings": {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni10"},
                     "metrics": ["Hit", "NDCG", "MRR"], "topk": [5, 10], "valid_metric": "MRR", "epochs": 2,
                     "stopping_step": 5, "MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 512, "show_progress": False},
        "runs": {"TEMA": {"model": "TEMA", "seeds": [1, 2]}, "SASRec": {"model": "SASRec"}},
        "compare": {"subject": "TEMA", "rivals": ["SASRec"]},
        "ablations": {"TEMA-no-cross": {"model": "TEMA", "cross_domain_encoder": False}},
        "published": PUBLISHED,
    }
    path = tmp_path / "fk.yaml"
    path.write_text(yaml.safe_dump(spec))
    (tmp_path / "README.md").write_text("# Title\n<!-- table -->\nstale figures\n<!-- /table -->\nafter\n")
    return path, spec


def _state(spec, name):
    return json.loads((Path(spec["state_dir"]) / f"{name}.json").read_text())


def _rows(markdown, protocol):
    section = markdown.split(f"## Test, `{protocol}`")[1].split("\n## ")[0].split("\n### ")[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_benchmark_builds_trains_resumes_and_reports(tmp_path):
    config, spec = _config(tmp_path)

    # A budget smaller than one epoch: every run stops after its first epoch, with a checkpoint.
    assert benchmark_main(["--config", str(config), "--run-budget-min", "0.0001"]) == 0
    for name in ("TEMA", "TEMA-s2", "SASRec", "TEMA-no-cross"):
        state = _state(spec, name)
        assert not state["finished"] and [entry["epoch"] for entry in state["curve"]] == [1]
        assert (Path(spec["work_dir"]) / "runs" / name / "last.pth").exists()
    table = Path(spec["results"]).read_text()
    assert "partial: budget after epoch 1" in table
    assert "tag" in table and "image branch" in table  # the build report's columns and the missing images

    # The next invocation resumes each run at epoch 2 and finishes it; a third trains nothing.
    assert benchmark_main(["--config", str(config)]) == 0
    state = _state(spec, "TEMA")
    assert state["finished"] and state["stop"] == "not converged in its 2-epoch limit"
    assert [entry["epoch"] for entry in state["curve"]] == [1, 2] and state["best_epoch"] in (1, 2)
    assert _state(spec, "TEMA-s2")["overrides"]["seed"] == 2 and _state(spec, "TEMA")["overrides"]["seed"] == 1
    assert state["cpu_seconds"] > 0 and all("cpu_seconds" in entry for entry in state["curve"])
    before = {name: _state(spec, name) for name in ("TEMA", "TEMA-s2", "SASRec", "TEMA-no-cross")}
    assert benchmark_main(["--config", str(config)]) == 0
    assert before == {name: _state(spec, name) for name in before}

    table = Path(spec["results"]).read_text()
    for protocol in ("uni10", "full"):
        rows = _rows(table, protocol)
        runs_and_domains = [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows]
        expected = [("TEMA", "food"), ("TEMA", "kitchen"), ("SASRec", "food"), ("SASRec", "kitchen")]
        if protocol == "uni10":
            expected += [("ABXI (published)", "food"), ("ABXI (published)", "kitchen")]
        assert sorted(runs_and_domains) == sorted(expected)
        for row in rows[:4]:
            means = [float(cell.split("±")[0]) for cell in row.split("|")[3:7]]
            assert all(0.0 <= value <= 1.0 for value in means) and means[0] <= means[1]  # Hit@5 <= Hit@10
            assert "not converged in its 2-epoch limit" in row
        tema_food = next(row for row in rows if row.startswith("| TEMA | food"))
        assert "±" in tema_food and tema_food.split("|")[7].strip() == "2"  # two seeds: mean ± std
        # The mean of the two seeds' stored results, as the table prints it.
        seeds = [_state(spec, name)["test"][protocol]["mrr/food"] for name in ("TEMA", "TEMA-s2")]
        assert float(tema_food.split("|")[6].split("±")[0]) == round(sum(seeds) / 2, 4)
    assert "TEMA (mean over its seeds) is at or above SASRec on " in table and "ABXI (published) on " in table
    paired = table.split("### Paired tests over test users, `uni10`")[1].split("\n## ")[0]
    paired_rows = [line for line in paired.splitlines() if line.startswith("| SASRec |")]
    assert len(paired_rows) == 2 * 3  # 2 domains x (mrr, ndcg@10, hit@10)
    users = sum(int(row.split("|")[4].replace(",", "")) for row in paired_rows if "| mrr |" in row)
    assert users == 300  # every test user, split by the target's domain
    by_popularity = table.split("## Test MRR by how often the target was a training target, `uni10`")[1].split("\n## ")[0]
    counted = [line for line in by_popularity.splitlines() if line.startswith("| (test users) |")]
    assert sum(int(cell.replace(",", "")) for line in counted for cell in line.split("|")[3:-1]) == 300
    validation = [line for line in by_popularity.splitlines() if line.startswith("| (validation users) |")]
    assert sum(int(cell.replace(",", "")) for line in validation for cell in line.split("|")[3:-1]) == 300
    assert len([line for line in by_popularity.splitlines() if line.startswith(("| TEMA |", "| SASRec |"))]) == 4
    by_text = table.split("## Test MRR by whether the target has text, `uni10`")[1].split("\n## ")[0]
    counted = [line for line in by_text.splitlines() if line.startswith("| (test users) |")]
    assert sum(int(cell.replace(",", "")) for line in counted for cell in line.split("|")[3:-1]) == 300
    ablation = Path(spec["ablation_results"]).read_text()
    assert "| TEMA-no-cross | food |" in ablation and "| TEMA | kitchen |" in ablation
    readme = (tmp_path / "README.md").read_text()
    assert "stale figures" not in readme and readme.startswith("# Title\n<!-- table -->\n") and readme.endswith("after\n")
    assert "| TEMA | food |" in readme and "TEMA (mean over its seeds) is at or above SASRec" in readme
    for plot in (spec["plot"], spec["time_plot"]):
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (Path(spec["state_dir"]) / "SASRec.ranks.npz").exists()


def test_run_cap_and_epoch_limit_stop_a_run_until_raised(tmp_path):
    config, spec = _config(tmp_path)
    spec.update(max_run_minutes=0.0001, runs={"SASRec": {"model": "SASRec"}}, ablations={})
    config.write_text(yaml.safe_dump(spec))
    assert benchmark_main(["--config", str(config)]) == 0
    state = _state(spec, "SASRec")
    assert state["finished"] and len(state["curve"]) == 1 and state["test"]
    assert "not converged in its 0.0001-minute cap" in Path(spec["results"]).read_text()
    assert benchmark_main(["--config", str(config)]) == 0  # done for good under this cap: not trained again
    assert len(_state(spec, "SASRec")["curve"]) == 1

    spec["runs"]["SASRec"]["max_run_minutes"] = 60  # its own, larger cap: it trains on from its checkpoint
    config.write_text(yaml.safe_dump(spec))
    assert benchmark_main(["--config", str(config)]) == 0
    state = _state(spec, "SASRec")
    assert state["finished"] and state["stop"] == "not converged in its 2-epoch limit"
    assert [e["epoch"] for e in state["curve"]] == [1, 2]

    spec["runs"]["SASRec"]["epochs"] = 3  # a raised epoch limit: not a new run, it trains on from its checkpoint
    config.write_text(yaml.safe_dump(spec))
    assert benchmark_main(["--config", str(config)]) == 0
    state = _state(spec, "SASRec")
    assert state["stop"] == "not converged in its 3-epoch limit" and [e["epoch"] for e in state["curve"]] == [1, 2, 3]


def test_a_run_another_live_process_trains_is_skipped(tmp_path):
    config, spec = _config(tmp_path)
    spec.update(runs={"SASRec": {"model": "SASRec"}}, ablations={}, compare={"subject": "SASRec", "rivals": []})
    config.write_text(yaml.safe_dump(spec))
    lock = Path(spec["work_dir"]) / "runs" / "SASRec" / "trained_by.pid"
    lock.parent.mkdir(parents=True)
    lock.write_text("1")  # a live process (init) holds the run
    assert benchmark_main(["--config", str(config)]) == 0
    assert not (Path(spec["state_dir"]) / "SASRec.json").exists() and lock.read_text() == "1"

    lock.write_text("999999999")  # its process is gone: the run is taken over, trained, and the lock removed
    assert benchmark_main(["--config", str(config)]) == 0
    assert _state(spec, "SASRec")["finished"] and not lock.exists()


def test_a_stored_run_trained_with_other_settings_is_refused(tmp_path, capsys):
    config, spec = _config(tmp_path)
    spec.update(max_run_minutes=0.0001, runs={"SASRec": {"model": "SASRec"}}, ablations={},
                compare={"subject": "SASRec", "rivals": []})
    config.write_text(yaml.safe_dump(spec))
    assert benchmark_main(["--config", str(config)]) == 0
    spec["runs"]["SASRec"]["hidden_size"] = 32  # the config changed; the stored results did not
    config.write_text(yaml.safe_dump(spec))
    assert benchmark_main(["--config", str(config), "--report-only"]) == 2
    error = capsys.readouterr().err
    assert "run [SASRec]" in error and "hidden_size: None -> 32" in error and "give the changed run a new name" in error


def test_a_partial_row_says_when_its_test_is_of_an_older_best_checkpoint():
    from recbole_tema.benchmark.report import _status

    killed = {"finished": False, "curve": [{}] * 5, "best_epoch": 4, "test": {"uni999": {}}, "tested_epoch": 2}
    assert _status(killed) == "partial: budget after epoch 5, resumes; test of epoch 2's checkpoint"
    assert _status({**killed, "tested_epoch": 4}) == "partial: budget after epoch 5, resumes"
    assert _status({key: value for key, value in killed.items() if key != "tested_epoch"}).endswith("resumes")


def test_a_run_whose_checkpoint_lags_its_curve_trains_again_from_epoch_1(tmp_path, capsys):
    # A state committed from one machine beside a checkpoint left by another training of the same name
    # (say one stopped after its first epoch): resuming would append a second epoch 2 to the curve.
    config, spec = _config(tmp_path)
    spec.update(runs={"SASRec": {"model": "SASRec"}}, ablations={})
    config.write_text(yaml.safe_dump(spec))
    assert benchmark_main(["--config", str(config), "--run-budget-min", "0.0001"]) == 0  # checkpoint of epoch 1
    state_file = Path(spec["state_dir"]) / "SASRec.json"
    state = json.loads(state_file.read_text())
    state["curve"].append({**state["curve"][0], "epoch": 2})
    state_file.write_text(json.dumps(state))

    assert benchmark_main(["--config", str(config)]) == 0
    assert "a checkpoint of epoch 1 in" in capsys.readouterr().out
    state = _state(spec, "SASRec")
    assert state["finished"] and [entry["epoch"] for entry in state["curve"]] == [1, 2]


def test_a_configured_run_not_trained_yet_is_named_beside_the_tables(tmp_path):
    config, spec = _config(tmp_path)
    spec.update(max_run_minutes=0.0001, runs={"SASRec": {"model": "SASRec"}, "GRU4Rec": {"model": "GRU4Rec"}},
                ablations={}, compare={"subject": "SASRec", "rivals": []})
    config.write_text(yaml.safe_dump(spec))
    assert benchmark_main(["--config", str(config), "--runs", "SASRec"]) == 0
    table = Path(spec["results"]).read_text()
    assert "| SASRec | food |" in table and "| GRU4Rec |" not in table
    assert "Configured but not trained yet, so without a row: GRU4Rec (`--runs GRU4Rec` trains them)." in table
    assert "1 of 1 stored runs have finished (each row's status says which); not trained yet: GRU4Rec;" in (
        tmp_path / "README.md").read_text()


def _stopped_run(tmp_path, stop, epochs, best_epoch, epoch_seconds=1.0):
    """Settings of a benchmark holding one stored run, ABXI, finished with ``stop``."""
    state_dir = tmp_path / "runs"
    state_dir.mkdir(exist_ok=True)
    curve = [{"epoch": epoch, "valid": {"mrr": 0.1}, "seconds": epoch_seconds} for epoch in range(1, epochs + 1)]
    (state_dir / "ABXI.json").write_text(json.dumps({"overrides": {}, "finished": True, "stop": stop, "curve": curve,
                                                     "best_epoch": best_epoch, "train_seconds": epochs * epoch_seconds}))
    return {"work_dir": str(tmp_path / "work"), "state_dir": str(state_dir),
            "settings": {"epochs": 100, "stopping_step": 5}}


def test_a_raised_patience_reopens_an_early_stopped_run(tmp_path):
    # Stopped after 6 epochs without a new best (patience 5): done for good under 5, not under 10.
    spec = _stopped_run(tmp_path, "early stopping", epochs=10, best_epoch=4)
    assert Run("ABXI", {"model": "ABXI"}, spec, None).finished
    assert not Run("ABXI", {"model": "ABXI", "stopping_step": 10}, spec, None).finished  # not a new run: trains on
    assert Run("ABXI", {"model": "ABXI", "epochs": 200}, spec, None).finished  # more epochs do not reopen it


def test_each_limit_reopens_only_the_runs_it_stopped(tmp_path):
    # Both statuses begin "not converged in its": each is told apart by its whole pattern.
    spec = _stopped_run(tmp_path, "not converged in its 100-epoch limit", epochs=100, best_epoch=100)
    assert Run("ABXI", {"model": "ABXI"}, spec, None).finished  # no cap set: still done under its epoch limit
    assert not Run("ABXI", {"model": "ABXI", "epochs": 200}, spec, None).finished
    # 8 epochs of 650 s (87 min): a 9th would end past 90 minutes, which is why the cap stopped it; not past 120.
    spec = _stopped_run(tmp_path, "not converged in its 90-minute cap", epochs=8, best_epoch=8, epoch_seconds=650.0)
    assert Run("ABXI", {"model": "ABXI", "max_run_minutes": 90}, spec, None).finished
    assert Run("ABXI", {"model": "ABXI", "max_run_minutes": 90, "epochs": 200}, spec, None).finished
    assert not Run("ABXI", {"model": "ABXI", "max_run_minutes": 120}, spec, None).finished
