"""The benchmark's runs: build the enriched dataset, train every configured model resumably, test it.

Every run goes through the plugin's pipeline (the one ``run_recbole`` uses) and is resumable: its state
lives in ``<work_dir>/runs/<name>/`` (``state.json``, ``last.pth``, ``best.pth``). A finished run is not
trained again; an interrupted or budget-stopped run continues from the epoch after its last checkpoint.
Tables (markdown) and a plot are rewritten from the stored states after every run, so a table can be
completed over several invocations. Runs use a GPU when one is present; each row says where it ran.
"""

import json
import os
import time
from pathlib import Path

import yaml
from recbole.utils import init_logger, init_seed

from atomic_data_builders.__main__ import main as build_main
from atomic_data_builders.atomic import atomic_open
from recbole_tema.benchmark.machine import describe_machine
from recbole_tema.config import Config
from recbole_tema.errors import ConfigurationError
from recbole_tema.evaluation.protocol import parse_eval_mode
from recbole_tema.quick_start import build_trainer, prepare_data

STATE_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT = "state.json", "last.pth", "best.pth"


class BudgetSpent(Exception):
    """Raised after a checkpoint when the next epoch would end past the wall-time budget."""


def load_benchmark_config(path):
    with open(path, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    missing = [key for key in ("source", "dataset", "work_dir", "results", "settings", "runs") if key not in spec]
    if missing:
        raise ConfigurationError(f"{path}: missing key(s) {missing}")
    for name, run in {**spec["runs"], **(spec.get("ablations") or {})}.items():
        if not isinstance(run, dict) or "model" not in run:
            raise ConfigurationError(f"{path}: run [{name}] needs a `model` key")
    spec.setdefault("protocols", [spec["settings"]["eval_args"]["mode"]])
    for protocol in spec["protocols"]:
        parse_eval_mode(protocol)  # a clear error for a protocol outside the cross-domain protocol
    return spec


def build_dataset(spec):
    """The enriched atomic files under ``<work_dir>/data``; an existing build is reused."""
    data_path = Path(spec["work_dir"]) / "data"
    folder = data_path / spec["dataset"]
    if not all((folder / f"{spec['dataset']}.{suffix}").exists() for suffix in ("inter", "item")):
        argv = ["split", "--input", str(spec["source"]), "--output-dir", str(data_path), "--dataset", spec["dataset"]]
        if build_main(argv + [str(arg) for arg in spec.get("build_args", [])]) != 0:
            raise SystemExit(f"building the dataset from {spec['source']} failed (see the messages above)")
    return data_path


def _write_json(path, value):
    with atomic_open(path) as handle:  # an interrupted write keeps the previous file
        json.dump(value, handle, indent=1)


def _save_checkpoint(trainer, epoch_idx, path):
    partial = f"{path}.part"
    trainer._save_checkpoint(epoch_idx, verbose=False, saved_model_file=partial)
    os.replace(partial, path)


class Run:
    """One model with one set of overrides, trained and tested through the plugin's pipeline, resumably."""

    def __init__(self, name, overrides, spec, data_path):
        self.name = name
        self.model = overrides["model"]
        self.overrides = {key: value for key, value in overrides.items() if key != "model"}
        self.spec = spec
        self.data_path = data_path
        self.folder = Path(spec["work_dir"]) / "runs" / name
        self.state_file = self.folder / STATE_FILE
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else None

    @property
    def finished(self):
        return bool(self.state and self.state["finished"])

    def config(self):
        config_dict = {**self.spec["settings"], **self.overrides}
        config_dict.update(data_path=str(self.data_path), checkpoint_dir=str(self.folder))
        return Config(model=self.model, dataset=self.spec["dataset"], config_dict=config_dict)

    def train(self, budget_s):
        """Train until early stopping, the last epoch or the budget; then test the best checkpoint."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.config()
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        _, train_data, valid_data, test_data = prepare_data(config)
        init_seed(config["seed"], config["reproducibility"])
        model = config.model_class(config, train_data._dataset).to(config["device"])
        trainer = build_trainer(config, model, train_data)
        state = self.state or {
            "name": self.name, "model": self.model, "overrides": self.overrides, "finished": False,
            "parameters": sum(p.numel() for p in model.parameters()), "curve": [], "best_epoch": None,
            "best_valid": None, "train_seconds": 0.0, "devices": [], "test": {},
        }
        if (self.folder / LAST_CHECKPOINT).exists():
            trainer.resume_checkpoint(self.folder / LAST_CHECKPOINT)
        device = f"{config['device']}: {describe_machine()}"
        if device not in state["devices"]:
            state["devices"].append(device)

        began = mark = time.time()
        valid_epoch, last_valid = trainer._valid_epoch, {}

        def recorded_valid_epoch(*args, **kwargs):
            score, result = valid_epoch(*args, **kwargs)
            last_valid["result"] = result
            return score, result

        def on_epoch_end(epoch_idx, valid_score):
            nonlocal mark
            now = time.time()
            seconds, mark = now - mark, now
            if trainer.cur_step == 0:  # RecBole's early_stopping resets the counter when the score improved
                _save_checkpoint(trainer, epoch_idx, self.folder / BEST_CHECKPOINT)
                state["best_epoch"], state["best_valid"] = epoch_idx + 1, last_valid["result"]
            _save_checkpoint(trainer, epoch_idx, self.folder / LAST_CHECKPOINT)
            state["curve"].append({
                "epoch": epoch_idx + 1, "loss": float(trainer.train_loss_dict[epoch_idx]), "seconds": round(seconds, 1),
                "valid": {key: value for key, value in last_valid["result"].items() if key.startswith(("mrr", "hit@10"))},
            })
            state["train_seconds"] += seconds
            _write_json(self.state_file, state)
            slowest = max(entry["seconds"] for entry in state["curve"])
            if now - began + slowest > budget_s:
                raise BudgetSpent

        trainer._valid_epoch = recorded_valid_epoch  # keeps each epoch's whole result for the learning curve
        stop = "budget"
        try:
            trainer.fit(train_data, valid_data, saved=False, show_progress=config["show_progress"],
                        callback_fn=on_epoch_end)
            stop = "early stopping" if trainer.cur_step > trainer.stopping_step else "last epoch"
        except BudgetSpent:
            pass
        if state["best_epoch"] is not None:
            state["test"] = self.test(trainer, test_data)
        state["finished"] = stop != "budget"
        state["stop"] = stop
        state["epochs"] = len(state["curve"])
        _write_json(self.state_file, state)
        self.state = state

    def test(self, trainer, test_data):
        """{protocol: test result} at the best checkpoint, under every protocol of the benchmark."""
        results = {}
        for protocol in self.spec["protocols"]:
            trainer.protocol.negatives["test"] = parse_eval_mode(protocol)
            results[protocol] = trainer.evaluate(test_data, load_best_model=True,
                                                 model_file=str(self.folder / BEST_CHECKPOINT))
        return results
