"""One pipeline (config -> data -> model -> trainer) for plugin and RecBole models alike."""

import os
import time
from logging import getLogger

from recbole.data import create_dataset, data_preparation
from recbole.utils import get_trainer, init_logger, init_seed, set_color

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


def _train(config, saved):
    """Data, model and trainer of ``config``, trained with early stopping: (trainer, test data, best valid score, result)."""
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
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    return trainer, test_data, best_valid_score, best_valid_result


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
    trainer, test_data, best_valid_score, best_valid_result = _train(config, saved)
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


def objective_function(config_dict=None, config_file_list=None, saved=False):
    """RecBole's ``HyperTuning`` objective, through the plugin's pipeline (any model, plugin or RecBole).

    Unlike RecBole's own, it never evaluates the test split: a search selects on validation only, so
    ``test_result`` is None. Model and dataset come from the config files or the command line, as in
    RecBole's ``run_hyper``. Adds the epochs trained and the wall seconds to the result.
    """
    began = time.time()
    config = Config(config_file_list=config_file_list, config_dict=config_dict)
    trainer, _, best_valid_score, best_valid_result = _train(config, saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "valid_metric": config["valid_metric"],
        "best_valid_result": best_valid_result,
        "test_result": None,
        "epochs": len(trainer.train_loss_dict),
        "seconds": time.time() - began,
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
