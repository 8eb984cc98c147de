"""What a dataset must satisfy before training: checked when it loads, with errors that name the file,
the column and the raw tokens (docs/atomic_files.md).

RecBole would otherwise fail later with an internal message (``Some feat is empty``), train on
silently padded vectors, or report a target without a domain only after training, by internal id.
"""

from logging import getLogger
from pathlib import Path

import numpy as np
import yaml
from recbole.utils import FeatureType

from atomic_data_builders.atomic import check_manifest
from recbole_tema.data.domains import domain_field_of
from recbole_tema.errors import ConfigurationError

SHOWN = 5  # raw tokens named in an error
DEFAULT_TAG_WEIGHT_FIELD = "tag_weights"  # docs/atomic_files.md


def check_files(config):
    """The dataset's ``.inter`` exists and holds at least one interaction (before RecBole reads it)."""
    folder = Path(config["data_path"])
    inter = folder / f"{config['dataset']}.inter"
    if not inter.is_file() and config["dataset"] in _downloadable():
        return  # RecBole downloads its own datasets by name
    if not inter.is_file():
        raise ConfigurationError(
            f"Dataset [{config['dataset']}] not found: no file {inter}. Build one with `python -m "
            f"atomic_data_builders ... --output-dir DIR --dataset {config['dataset']}` and pass "
            f"--data_path=DIR, or use the built-in dataset ml-100k-cd."
        )
    mixed = check_manifest(folder, config["dataset"])  # files of two builds (docs/atomic_files.md)
    if mixed:
        raise ConfigurationError(mixed)
    with open(inter, encoding="utf-8") as handle:
        handle.readline()  # the header
        if not any(line.strip() for line in handle):
            raise ConfigurationError(f"{inter} has a header but no interaction: nothing to train on.")
    if "user" in (config["load_col"] or {}):
        _check_every_user_has_a_row(config, inter, folder / f"{config['dataset']}.user")


def _column_values(path, field, separator):
    """The raw values of one column of an atomic file (its header cell is ``field:type``)."""
    with open(path, encoding="utf-8") as handle:
        header = [cell.split(":")[0] for cell in handle.readline().rstrip("\n").split(separator)]
        at = header.index(field)
        return {line.rstrip("\n").split(separator)[at] for line in handle if line.strip()}


def _check_every_user_has_a_row(config, inter, user):
    """RecBole drops, without a word, the interactions of a user who has no row in a loaded ``.user``."""
    field, separator = config["USER_ID_FIELD"], config["field_separator"]
    missing = sorted(_column_values(inter, field, separator) - _column_values(user, field, separator))
    if missing:
        raise ConfigurationError(
            f"{user}: {len(missing)} user(s) of {inter.name} have no row, e.g. {missing[:SHOWN]}; RecBole would drop "
            "their interactions. Give every user a row (an empty cell where there is no profile): run the "
            "user_profile stage of atomic_data_builders again."
        )


def _downloadable():
    """Names of the datasets RecBole downloads on first use (its properties/dataset/url.yaml)."""
    import recbole

    with open(Path(recbole.__file__).parent / "properties" / "dataset" / "url.yaml", encoding="utf-8") as handle:
        return set(yaml.safe_load(handle))


def check_loaded(dataset):
    """After RecBole has read the files (item_feat still a DataFrame): domains, vector widths, short users."""
    item_feat = dataset.item_feat
    if item_feat is not None:
        _check_vector_widths(dataset, item_feat, dataset.iid_field, _item_file(dataset), "item")
    if dataset.user_feat is not None:
        path = Path(dataset.config["data_path"]) / f"{dataset.dataset_name}.user"
        _check_vector_widths(dataset, dataset.user_feat, dataset.uid_field, path, "user")
    if domain_field_of(dataset.config) in (item_feat if item_feat is not None else {}):
        _check_every_item_has_a_domain(dataset)
    _say_unevaluated_users(dataset)


def _item_file(dataset):
    return Path(dataset.config["data_path"]) / f"{dataset.dataset_name}.item"


def _check_vector_widths(dataset, feat, id_field, path, noun):
    """Every non-empty cell of a vector column (float_seq) of ``.item`` or ``.user`` has the same length:
    RecBole would zero-pad the short ones. The tag weights column holds one weight per tag of the item, so
    its length varies."""
    per_tag = dataset.config["TAG_WEIGHT_FIELD"] or DEFAULT_TAG_WEIGHT_FIELD
    for field, kind in dataset.field2type.items():
        if kind != FeatureType.FLOAT_SEQ or field not in feat or field == per_tag:
            continue
        lengths = np.fromiter((len(cell) for cell in feat[field]), dtype=np.int64, count=len(feat))  # [n]
        widths = np.unique(lengths[lengths > 0])
        if len(widths) > 1:
            usual = int(np.bincount(lengths[lengths > 0]).argmax())
            odd = np.flatnonzero((lengths > 0) & (lengths != usual))
            tokens = [str(token) for token in dataset.id2token(id_field, feat[id_field].to_numpy()[odd[:SHOWN]])]
            raise ConfigurationError(
                f"{path}: column [{field}] has vectors of {len(widths)} lengths {widths.tolist()}: "
                f"{len(odd)} {noun}(s) differ from the usual {usual}, e.g. {tokens}. Rebuild the column (one "
                "embedding model per column) or leave those cells empty."
            )


def _check_every_item_has_a_domain(dataset):
    """Every item of the interactions has a domain token (an empty cell, or no .item row, has none)."""
    field = domain_field_of(dataset.config)
    domain_of = np.zeros(dataset.item_num, dtype=np.int64)  # [n_items] domain token id, 0 = none
    domain_of[dataset.item_feat[dataset.iid_field].to_numpy()] = dataset.item_feat[field].to_numpy()
    used = np.unique(dataset.inter_feat[dataset.iid_field].to_numpy())  # [U] internal item ids
    missing = used[(used > 0) & (domain_of[used] == 0)]
    if len(missing):
        tokens = [str(token) for token in dataset.id2token(dataset.iid_field, missing[:SHOWN])]
        raise ConfigurationError(
            f"{_item_file(dataset)}: {len(missing)} item(s) of the interactions have no `{field}`, e.g. "
            f"{tokens}: give every item a domain (an empty cell or a missing row has none), or drop their "
            "interactions."
        )


def _say_unevaluated_users(dataset):
    counts = dataset.inter_feat[dataset.uid_field].value_counts()
    single = int((counts == 1).sum())
    if single:
        getLogger().warning(
            f"{single} of {len(counts)} users of [{dataset.dataset_name}] have a single interaction: "
            "with no history before it they are never evaluated (and never trained on)."
        )
