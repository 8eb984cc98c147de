"""The benchmark's runs: build the enriched dataset, train every configured model resumably, test it.

Every run goes through the plugin's pipeline (the one ``run_recbole`` uses) and is resumable. Its state
(learning curve, test results, wall and CPU seconds) is ``<state_dir>/<name>.json`` and the per-user test
ranks ``<state_dir>/<name>.ranks.npz``: small files meant to be committed, so that the tables can be
completed over several invocations and machines. Its checkpoints (``last.pth``, ``best.pth``) are in
``<work_dir>/runs/<name>/``. A finished run is not trained again; an interrupted or budget-stopped run
continues from the epoch after its last checkpoint (or from the start where that checkpoint is gone or is not of
the last epoch its state records).
A run with ``seeds: [a, b, ...]`` is trained once per seed: ``NAME`` with the first, ``NAME-s<seed>`` with
the others. Runs use a GPU when one is present; each row says where it ran.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from recbole.utils import init_logger, init_seed

from atomic_data_builders.__main__ import main as build_main
from atomic_data_builders.atomic import atomic_open
from recbole_tema.benchmark.machine import describe_machine, load_average
from recbole_tema.config import Config
from recbole_tema.errors import ConfigurationError
from recbole_tema.evaluation.protocol import parse_eval_mode
from recbole_tema.quick_start import build_trainer, prepare_data, save_checkpoint

LAST_CHECKPOINT, BEST_CHECKPOINT = "last.pth", "best.pth"
LOCK_FILE = "trained_by.pid"  # a run's folder holds it while a process trains that run
CAPPED = "not converged in its {:g}-minute cap"  # the status of a run its max_run_minutes stopped
EPOCH_LIMIT = "not converged in its {}-epoch limit"  # the status of a run that ended its epochs without early stopping
LIMITS = ("max_run_minutes", "epochs", "stopping_step")  # a run's overrides that only say when it stops


class BudgetSpent(Exception):
    """Raised after a checkpoint when the next epoch would end past the wall-time budget."""

    def __init__(self, capped):
        super().__init__()
        self.capped = capped  # True: the run's own cap (max_run_minutes) is spent, False: this invocation's budget


def load_benchmark_config(path):
    with open(path, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    missing = [key for key in ("source", "dataset", "work_dir", "results", "settings", "runs") if key not in spec]
    if missing:
        raise ConfigurationError(f"{path}: missing key(s) {missing}")
    if isinstance(spec["settings"], str):  # a RecBole config file, shared with run_hyper
        with open(spec["settings"], encoding="utf-8") as handle:
            spec["settings"] = yaml.safe_load(handle)
    for name, run in {**spec["runs"], **(spec.get("ablations") or {})}.items():
        if not isinstance(run, dict) or "model" not in run:
            raise ConfigurationError(f"{path}: run [{name}] needs a `model` key")
    spec["runs"] = expand_seeds(spec["runs"], spec["settings"].get("seed"))
    spec["ablations"] = expand_seeds(spec.get("ablations") or {}, spec["settings"].get("seed"))
    spec.setdefault("state_dir", str(Path(spec["work_dir"]) / "runs"))
    spec.setdefault("protocols", [spec["settings"]["eval_args"]["mode"]])
    for protocol in spec["protocols"]:
        parse_eval_mode(protocol)  # a clear error for a protocol outside the cross-domain protocol
    return spec


def expand_seeds(runs, default_seed):
    """{name: overrides}: a run with ``seeds: [a, b, ...]`` becomes NAME (seed a), NAME-s<b>, ..."""
    expanded = {}
    for name, run in runs.items():
        base = {key: value for key, value in run.items() if key != "seeds"}
        for index, seed in enumerate(run.get("seeds") or [run.get("seed", default_seed)]):
            seeded = {"seed": seed} if seed is not None else {}
            expanded[name if index == 0 else f"{name}-s{seed}"] = {**base, **seeded, "group": name}
    return expanded


def build_dataset(spec):
    """The enriched atomic files under ``<work_dir>/data``; an existing build is reused."""
    data_path = Path(spec["work_dir"]) / "data"
    folder = data_path / spec["dataset"]
    if not all((folder / f"{spec['dataset']}.{suffix}").exists() for suffix in ("inter", "item")):
        argv = ["split", "--input", str(spec["source"]), "--output-dir", str(data_path), "--dataset", spec["dataset"]]
        if build_main(argv + [str(arg) for arg in spec.get("build_args", [])]) != 0:
            raise SystemExit(f"building the dataset from {spec['source']} failed (see the messages above)")
    return data_path


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _checkpoint_epochs(path):
    """Epochs trained by the checkpoint at ``path`` (RecBole stores the last epoch's 0-based index), None if absent."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)["epoch"] + 1  # our own file, with its config


def _is_status(stop, template):
    """Whether ``stop`` is ``template`` (CAPPED, EPOCH_LIMIT) with its one placeholder filled in."""
    head, tail = template.split("{")[0], template.split("}")[1]
    return stop.startswith(head) and stop.endswith(tail)


def _slowest_epoch(curve):
    """Seconds of the longest epoch so far: what the next one is expected to take at most."""
    return max(entry["seconds"] for entry in curve)


def _write_json(path, value):
    with atomic_open(path) as handle:  # an interrupted write keeps the previous file
        json.dump(value, handle, indent=1)


class Run:
    """One model with one set of overrides, trained and tested through the plugin's pipeline, resumably."""

    def __init__(self, name, overrides, spec, data_path):
        self.name = name
        self.model = overrides["model"]
        self.group = overrides.get("group", name)
        # The limits are not part of a run's identity: they do not change its learning curve, so a run stopped
        # by one trains on from its checkpoint once the limit is raised.
        self.overrides = {key: value for key, value in overrides.items() if key not in ("model", "group", *LIMITS)}
        # minutes of training + validation after which a still-improving run stops (its own, else the benchmark's)
        self.cap_minutes = overrides.get("max_run_minutes", spec.get("max_run_minutes", float("inf")))
        # its own epoch limit and patience, else the benchmark's (None: the model's defaults)
        self.max_epochs = overrides.get("epochs", spec["settings"].get("epochs"))
        self.patience = overrides.get("stopping_step", spec["settings"].get("stopping_step"))
        self.spec = spec
        self.data_path = data_path
        self.folder = Path(spec["work_dir"]) / "runs" / name  # checkpoints
        self.state_file = Path(spec["state_dir"]) / f"{name}.json"
        self.ranks_file = Path(spec["state_dir"]) / f"{name}.ranks.npz"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else None
        if self.state is not None and self.state["overrides"] != self.overrides:
            stored = self.state["overrides"]
            changed = {key: (stored.get(key), self.overrides.get(key)) for key in sorted({*stored, *self.overrides})
                       if stored.get(key) != self.overrides.get(key)}
            raise ConfigurationError(
                f"run [{name}]: its stored state {self.state_file} was trained with other settings than the config "
                f"now gives ({', '.join(f'{key}: {old} -> {new}' for key, (old, new) in changed.items())}); give the "
                f"changed run a new name, or delete {self.state_file}, its .ranks.npz and {self.folder} to train it again."
            )

    @property
    def finished(self):
        """Done for good: stopped by early stopping, its cap or its epochs, none of them raised since."""
        if not (self.state and self.state["finished"]):
            return False
        stop = self.state.get("stop", "")
        if _is_status(stop, CAPPED):  # the rule it stopped by: its next epoch would have ended past the cap
            return self.state["train_seconds"] + _slowest_epoch(self.state["curve"]) > self.cap_minutes * 60
        if _is_status(stop, EPOCH_LIMIT):
            return self.max_epochs is None or len(self.state["curve"]) >= self.max_epochs
        stale = len(self.state["curve"]) - self.state["best_epoch"]  # epochs after the best: patience + 1 when it stopped
        return self.patience is None or stale > self.patience

    def claim(self):
        """Take the run for this process (True), or leave it to another live process that trains it (False).

        Invocations started side by side may list the same run; the first one trains it, the others
        skip it. A lock left by a process that died is taken over. The state is read again on success:
        another process may have finished the run meanwhile.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = self.folder / LOCK_FILE
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = lock.read_text().strip()
            if owner.isdigit() and _alive(int(owner)):
                return False
            lock.unlink(missing_ok=True)  # its process is gone
            return self.claim()
        with os.fdopen(handle, "w") as written:
            written.write(str(os.getpid()))
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else None
        return True

    def release(self):
        (self.folder / LOCK_FILE).unlink(missing_ok=True)

    def test_ranks(self):
        """{protocol: {user token: rank}} and {user token: target domain} of the best checkpoint's test."""
        if not self.ranks_file.exists():
            return None
        with np.load(self.ranks_file) as stored:
            users, domains = stored["users"], stored["domains"]
            protocols = {key[len("rank_"):]: dict(zip(users, stored[key])) for key in stored if key.startswith("rank_")}
        return protocols, dict(zip(users, domains))

    def config(self):
        config_dict = {**self.spec["settings"], **self.overrides}
        limits = {"epochs": self.max_epochs, "stopping_step": self.patience}
        config_dict.update({key: value for key, value in limits.items() if value is not None})
        config_dict.update(data_path=str(self.data_path), checkpoint_dir=str(self.folder))
        return Config(model=self.model, dataset=self.spec["dataset"], config_dict=config_dict)

    def _fresh_state(self, model):
        return {
            "name": self.name, "group": self.group, "model": self.model, "overrides": self.overrides,
            "finished": False, "parameters": sum(p.numel() for p in model.parameters()), "curve": [],
            "best_epoch": None, "best_valid": None, "train_seconds": 0.0, "cpu_seconds": 0.0, "devices": [],
            "test": {},
        }

    def train(self, budget_s):
        """Train until early stopping, the epoch limit, the cap or the budget; then test the best checkpoint."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        config = self.config()
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        _, train_data, valid_data, test_data = prepare_data(config)
        init_seed(config["seed"], config["reproducibility"])
        model = config.model_class(config, train_data._dataset).to(config["device"])
        trainer = build_trainer(config, model, train_data)
        state = self.state
        if state and state["curve"]:
            recorded, checkpointed = len(state["curve"]), _checkpoint_epochs(self.folder / LAST_CHECKPOINT)
            if checkpointed == recorded:
                trainer.resume_checkpoint(self.folder / LAST_CHECKPOINT)
            else:  # gone with the machine, or left by another training of this name: its curve would not continue
                found = "no checkpoint" if checkpointed is None else f"a checkpoint of epoch {checkpointed}"
                print(f"{self.name}: {found} in {self.folder} for its {recorded} recorded epoch(s): "
                      "training again from epoch 1", flush=True)
                state = None
        state = state or self._fresh_state(model)
        state["finished"] = False  # a run whose cap, epoch limit or patience was raised trains on
        state["patience"] = config["stopping_step"]
        device = f"{config['device']}: {describe_machine()}"
        if device not in state["devices"]:
            state["devices"].append(device)

        cap_s = self.cap_minutes * 60 - state["train_seconds"]
        began = mark = time.time()
        cpu_mark = time.process_time()
        valid_epoch, last_valid = trainer._valid_epoch, {}

        def recorded_valid_epoch(*args, **kwargs):
            score, result = valid_epoch(*args, **kwargs)
            last_valid["result"] = result
            return score, result

        def on_epoch_end(epoch_idx, valid_score):
            nonlocal mark, cpu_mark
            now, cpu_now = time.time(), time.process_time()
            seconds, cpu_seconds, mark, cpu_mark = now - mark, cpu_now - cpu_mark, now, cpu_now
            if trainer.cur_step == 0:  # RecBole's early_stopping resets the counter when the score improved
                save_checkpoint(trainer, epoch_idx, self.folder / BEST_CHECKPOINT)
                state["best_epoch"], state["best_valid"] = epoch_idx + 1, last_valid["result"]
            save_checkpoint(trainer, epoch_idx, self.folder / LAST_CHECKPOINT)
            state["curve"].append({
                "epoch": epoch_idx + 1, "loss": float(trainer.train_loss_dict[epoch_idx]), "seconds": round(seconds, 1),
                "cpu_seconds": round(cpu_seconds, 1), "load": round(load_average(), 2),
                "valid": {key: value for key, value in last_valid["result"].items() if key.startswith(("mrr", "hit@10"))},
            })
            state["train_seconds"] += seconds
            state["cpu_seconds"] += cpu_seconds
            _write_json(self.state_file, state)
            if now - began + _slowest_epoch(state["curve"]) > min(budget_s, cap_s):
                raise BudgetSpent(capped=cap_s <= budget_s)

        trainer._valid_epoch = recorded_valid_epoch  # keeps each epoch's whole result for the learning curve
        stop = "budget"
        try:
            trainer.fit(train_data, valid_data, saved=False, show_progress=config["show_progress"],
                        callback_fn=on_epoch_end)
            stop = "early stopping" if trainer.cur_step > trainer.stopping_step else EPOCH_LIMIT.format(config["epochs"])
        except BudgetSpent as spent:
            if spent.capped:
                stop = CAPPED.format(self.cap_minutes)
        if state["best_epoch"] is not None:
            state["test"] = self.test(trainer, test_data)
            state["tested_epoch"] = state["best_epoch"]  # a run killed later may record a newer best, untested
        state["finished"] = stop != "budget"
        state["stop"] = stop
        _write_json(self.state_file, state)
        self.state = state

    def test(self, trainer, test_data):
        """{protocol: test result} at the best checkpoint, under every protocol of the benchmark.

        The per-user ranks go to ``<name>.ranks.npz`` (raw user tokens): the paired tests read them.
        """
        trainer._load_best(str(self.folder / BEST_CHECKPOINT))
        results, ranks = {}, {}
        for protocol in self.spec["protocols"]:
            trainer.protocol.negatives["test"] = parse_eval_mode(protocol)
            users, ranks[f"rank_{protocol}"], domains = trainer.rank_targets(test_data, phase="test")
            results[protocol] = trainer.protocol.summarize(ranks[f"rank_{protocol}"], domains)
        dataset = test_data._dataset
        tokens = dataset.id2token(dataset.uid_field, users.numpy())
        names = np.array(trainer.protocol.domains.names)[domains.numpy()]
        partial = self.ranks_file.with_name(self.ranks_file.name + ".part.npz")
        np.savez_compressed(partial, users=tokens.astype(str), domains=names.astype(str),
                            **{key: value.numpy() for key, value in ranks.items()})
        os.replace(partial, self.ranks_file)
        return results
