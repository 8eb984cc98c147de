"""One pipeline (config -> data -> model -> trainer) for plugin and RecBole models alike."""

import json
import os
import time
from logging import getLogger
from pathlib import Path

from recbole.data import create_dataset, data_preparation
from recbole.utils import get_trainer, init_logger, init_seed, set_color

from atomic_data_builders.atomic import atomic_open
from recbole_tema import compat, distributed
from recbole_tema.config import Config
from recbole_tema.data import checks
from recbole_tema.data.builtin import ensure_builtin_dataset
from recbole_tema.data.training_rows import sequence_train_loader, train_rows_of
from recbole_tema.errors import ConfigurationError
from recbole_tema.evaluation.protocol import CrossDomainProtocol
from recbole_tema.evaluation.trainer import plugin_trainer_class
from recbole_tema.warmup import LinearWarmup


def prepare_data(config):
    """(dataset, train, valid, test loaders).

    With ``train_rows: sequence`` the training loader yields one row per window of each user's
    training sequence instead of one per prefix (recbole_tema/data/training_rows.py).
    """
    ensure_builtin_dataset(config["dataset"], config["data_path"])  # a built-in dataset is made on first use
    checks.check_files(config)
    dataset = create_dataset(config)
    checks.check_loaded(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if train_rows_of(config) == "sequence":
        if not getattr(config.model_class, "supports_sequence_rows", False):
            raise ConfigurationError(
                f"Model [{config['model']}] learns from the last position of each row only: it needs "
                f"train_rows: prefix (train_rows: sequence is for the plugin's cross-domain models)."
            )
        train_data = sequence_train_loader(config, train_data)
    return dataset, train_data, valid_data, test_data


def build_trainer(config, model, train_data):
    """The model's RecBole trainer; on a cross-domain dataset, with the cross-domain protocol."""
    trainer = plugin_trainer_class(get_trainer(config["MODEL_TYPE"], config["model"]), config["cross_domain"])(config, model)
    if config["cross_domain"]:
        trainer.attach_protocol(CrossDomainProtocol(config, train_data._dataset))
    if config["lr_warmup_epochs"]:
        LinearWarmup(trainer, config["lr_warmup_epochs"], len(train_data))
    return trainer


def save_checkpoint(trainer, epoch_idx, path):
    """RecBole's checkpoint of ``trainer`` (model, optimizer, epoch, early-stopping state) at ``path``,
    written under a temporary name and renamed: an interrupted write keeps the previous checkpoint."""
    partial = f"{path}.part"
    trainer._save_checkpoint(epoch_idx, verbose=False, saved_model_file=partial)
    os.replace(partial, path)


class EpochCheckpoints:
    """A ``fit`` callback that makes a training resumable from its last finished epoch.

    After every validation the trainer's checkpoint goes to ``<folder>/last.pth`` and what RecBole's
    checkpoint lacks (the best validation result, epochs and wall seconds so far) to
    ``<folder>/progress.json``. Created on a folder holding both, it resumes the trainer from them. The
    random streams are not restored: a resumed training is not bit-identical to an uninterrupted one.
    """

    def __init__(self, trainer, folder, began):
        self.trainer, self.folder = trainer, Path(folder)
        self.last, self.progress_file = self.folder / "last.pth", self.folder / "progress.json"
        self.began = began  # wall time this invocation started (its data loading counts)
        self.progress = {"epochs": 0, "seconds": 0.0, "best_valid_result": None}
        if self.last.exists() and self.progress_file.exists():
            trainer.resume_checkpoint(self.last)
            self.progress = json.loads(self.progress_file.read_text(encoding="utf-8"))
            trainer.best_valid_result = self.progress["best_valid_result"]
        self.seconds_before = self.progress["seconds"]
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, epoch_idx, valid_score):
        save_checkpoint(self.trainer, epoch_idx, self.last)
        result = self.trainer.best_valid_result
        self.progress = {"epochs": epoch_idx + 1, "seconds": self.seconds_before + time.time() - self.began,
                         "best_valid_result": {key: float(value) for key, value in result.items()} if result else None}
        with atomic_open(self.progress_file) as handle:
            json.dump(self.progress, handle)


def _train(config, saved, resume_dir=None):
    """Data, model and trainer of ``config``, trained with early stopping: (trainer, test data, best valid score,
    result, checkpoints). With ``resume_dir``, the training checkpoints every epoch there and resumes from it
    (``checkpoints``: its EpochCheckpoints, else None)."""
    began = time.time()
    init_seed(config["seed"], config["reproducibility"])
    # RecBole's logger and trainer make ./log/<model> and the checkpoint folder with an exists-check then
    # makedirs, which races between the processes of a distributed run (FileExistsError): make them first.
    for folder in (os.path.join("log", config["model"]), config["checkpoint_dir"]):
        os.makedirs(folder, exist_ok=True)
    init_logger(config)
    logger = getLogger()
    logger.info(config)

    dataset, train_data, valid_data, test_data = prepare_data(config)
    logger.info(dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = config.model_class(config, train_data._dataset).to(config["device"])
    logger.info(model)

    trainer = build_trainer(config, model, train_data)
    checkpoints = EpochCheckpoints(trainer, resume_dir, began) if resume_dir else None
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=checkpoints
    )
    return trainer, test_data, best_valid_score, best_valid_result, checkpoints


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True,
        nproc=1, world_size=-1, ip="localhost", port=5678, offset=0):
    """Train and test one model, as RecBole's ``run_recbole`` does; returns its result dict.

    ``nproc`` > 1 (or ``world_size`` > 1) trains with DistributedDataParallel in ``nproc`` processes of
    this machine, as RecBole's distributed mode does, on GPUs (NCCL) or CPUs (gloo); recbole_tema/distributed.py.
    """
    if nproc > 1 or world_size > 1:
        kwargs = {"model": model, "dataset": dataset, "config_file_list": config_file_list,
                  "config_dict": config_dict, "saved": saved}
        return distributed.spawn(run, kwargs, nproc, world_size, ip, port, offset)
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    trainer, test_data, best_valid_score, best_valid_result, _ = _train(config, saved)
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger = getLogger()
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "train_epoch_seconds": trainer.train_epoch_seconds,
    }


def objective_function(config_dict=None, config_file_list=None, saved=False, resume_dir=None):
    """RecBole's ``HyperTuning`` objective, through the plugin's pipeline (any model, plugin or RecBole).

    Unlike RecBole's own, it never evaluates the test split: a search selects on validation only, so
    ``test_result`` is None. Model and dataset come from the config files or the command line, as in
    RecBole's ``run_hyper``. Adds the epochs trained and the wall seconds to the result. With
    ``resume_dir`` the trial checkpoints every epoch there and an interrupted trial resumes from its
    last epoch (the caller deletes the folder once it has stored the result).
    """
    began = time.time()
    config = Config(config_file_list=config_file_list, config_dict=config_dict)
    trainer, _, best_valid_score, best_valid_result, checkpoints = _train(config, saved, resume_dir)
    epochs, seconds = len(trainer.train_loss_dict), time.time() - began
    if checkpoints is not None:
        epochs, seconds = checkpoints.progress["epochs"], checkpoints.progress["seconds"]
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "valid_metric": config["valid_metric"],
        "best_valid_result": best_valid_result,
        "test_result": None,
        "epochs": epochs,
        "seconds": seconds,
    }


def load_data_and_model(model_file):
    """Reload a checkpoint written by the trainer: (config, model, dataset, train, valid, test data)."""
    compat.apply()
    checkpoint = compat.load_checkpoint(model_file)
    config = checkpoint["config"]
    config["single_spec"], config["local_rank"] = True, 0  # reloaded in this one process, also after a distributed run
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset, train_data, valid_data, test_data = prepare_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = config.model_class(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
