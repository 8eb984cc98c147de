"""RecBole's Config, plus the plugin's models, property files and cross-domain defaults."""

import copy
from pathlib import Path

from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_tema import compat
from recbole_tema.data.builtin import builtin_item_columns
from recbole_tema.data.domains import DEFAULT_DOMAIN_FIELD
from recbole_tema.distributed import init_process
from recbole_tema.errors import ConfigurationError
from recbole_tema.evaluation.protocol import parse_eval_mode
from recbole_tema.registry import get_model

PROPERTIES = Path(__file__).parent / "properties"


def _header(path, separator):
    """Column names of an atomic file's header line, [] where the file does not exist."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [column.split(":")[0] for column in handle.readline().rstrip("\r\n").split(separator)]


def _item_header(dataset_dir, dataset, separator):
    """Column names of the dataset's .item file (a built-in dataset's before it is built), [] if none."""
    path = Path(dataset_dir) / f"{dataset}.item"
    if not path.is_file():
        return builtin_item_columns(dataset) or []
    return _header(path, separator)


# Keys whose value must be a positive integer wherever a model or RecBole reads them.
POSITIVE_INT_KEYS = ("hidden_size", "embedding_size", "inner_size", "n_layers", "n_heads", "MAX_ITEM_LIST_LENGTH",
                     "train_batch_size", "eval_batch_size", "epochs")


class Config(RecBoleConfig):
    """Loads, in order of increasing priority: RecBole's defaults, the plugin's
    ``properties/overall.yaml``, ``properties/model/<Model>.yaml`` and
    ``properties/dataset/<dataset>.yaml``, then the user's files, dict and command line.

    For a dataset whose ``.item`` has a domain column it also switches on the cross-domain
    protocol: ``eval_args.mode`` ``full`` or ``uniN`` is recorded in ``cd_eval_negatives`` and
    RecBole is asked for full-sort loaders, whose scores the protocol ranks within the domain.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        compat.apply()
        super().__init__(model, dataset, config_file_list, config_dict)

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self.plugin_dataset_keys = set()
        for path in (PROPERTIES / "overall.yaml", PROPERTIES / "model" / f"{model}.yaml"):
            if path.is_file():
                self._update_internal_config_dict(str(path))
        dataset_file = PROPERTIES / "dataset" / f"{dataset}.yaml"
        if dataset_file.is_file():
            values = self._update_internal_config_dict(str(dataset_file)) or {}
            self.plugin_dataset_keys = set(values)
            self.parameters["Dataset"] += [key for key in values if key not in self.parameters["Dataset"]]

    def _set_default_parameters(self):
        config = self.final_config_dict
        if config.get("loss_type") == "CE" and "train_neg_sample_args" not in self.external_config_dict:
            # RecBole 1.2.1 refuses CE models (SASRec, ...) unless the user unsets its default sampler.
            config["train_neg_sample_args"] = None
        super()._set_default_parameters()
        config["DOMAIN_FIELD"] = config.get("DOMAIN_FIELD") or DEFAULT_DOMAIN_FIELD
        self._check_sizes()
        header = _item_header(config["data_path"], self.dataset, config["field_separator"])
        # The protocol ranks leave-one-out targets of sequences: it applies to sequential models.
        config["cross_domain"] = config["DOMAIN_FIELD"] in header and config["MODEL_TYPE"] == ModelType.SEQUENTIAL
        if not config["cross_domain"]:
            self._load_time_of_sequences()
            return
        if "load_col" not in self.external_config_dict and "load_col" not in self.plugin_dataset_keys:
            # RecBole's default loads only user and item ids: no time order, no domain, no features.
            config["load_col"] = {
                "inter": [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"], config["TIME_FIELD"]],
                "item": header,
            }
            # The .user columns a model reads (its ``user_feature_fields``), where the dataset has them.
            user_header = _header(Path(config["data_path"]) / f"{self.dataset}.user", config["field_separator"])
            wanted = [field for field in getattr(self.model_class, "user_feature_fields", ()) if field in user_header]
            if wanted:
                config["load_col"]["user"] = [config["USER_ID_FIELD"], *wanted]
        eval_args = copy.deepcopy(config["eval_args"])
        config["cd_eval_negatives"] = {phase: parse_eval_mode(eval_args["mode"][phase]) for phase in ("valid", "test")}
        eval_args["mode"] = {"valid": "full", "test": "full"}
        config["eval_args"] = eval_args

    def _init_device(self):
        if "local_rank" not in self.final_config_dict:  # one process: RecBole's choice of device
            return super()._init_device()
        gpu_id = self.final_config_dict["gpu_id"]  # a distributed run: RecBole's would be GPU-only
        self.final_config_dict["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
        init_process(self.final_config_dict)

    def _check_sizes(self):
        for key in POSITIVE_INT_KEYS:
            value = self.final_config_dict.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{key} must be a positive integer, got [{value!r}] "
                                         f"(from --{key}=, a config file or the model's defaults).")

    def _load_time_of_sequences(self):
        """A sequential model on a dataset without domains orders each user's items by time: RecBole's
        default ``load_col`` leaves the time column out, so add it where the ``.inter`` file has one."""
        config = self.final_config_dict
        if config["MODEL_TYPE"] != ModelType.SEQUENTIAL or "load_col" in self.external_config_dict:
            return
        if "load_col" in self.plugin_dataset_keys or not config.get("load_col"):
            return
        inter = _header(Path(config["data_path"]) / f"{self.dataset}.inter", config["field_separator"])
        columns = config["load_col"].setdefault("inter", [])
        if config["TIME_FIELD"] in inter and config["TIME_FIELD"] not in columns:
            columns.append(config["TIME_FIELD"])
