"""How a sequential model reads its training split: one row per prefix, or one row per user sequence.

RecBole's sequential datasets hold one training row per prefix: for a user with training timeline
``i_1 .. i_T`` (everything before the validation target) the rows are ``(i_1 | i_2)``,
``(i_1 i_2 | i_3)``, ..., each history cut to its last ``MAX_ITEM_LIST_LENGTH`` items. A model fed
these (``train_rows: prefix``) encodes every prefix from scratch and learns from its last position.

``train_rows: sequence`` keeps only the rows that end a window of the timeline: the row whose target
is ``i_T``, then the one whose target is ``i_{T-L}``, ``i_{T-2L}``, ... (``L = MAX_ITEM_LIST_LENGTH``).
Each kept row holds ``L`` (or, for the first window, fewer) input items and, read with the next item
at every position, ``L`` training targets; the windows' targets are ``i_2 .. i_T`` exactly once, so no
training target is lost and none is added. The rows are a subset of RecBole's training rows, so no
validation or test item can reach them.
"""

import numpy as np
from recbole.data.utils import get_dataloader

from recbole_tema.errors import ConfigurationError

TRAIN_ROWS = ("prefix", "sequence")


def train_rows_of(config):
    """The configured ``train_rows`` (``prefix`` when unset), checked."""
    mode = config["train_rows"] or "prefix"
    if mode not in TRAIN_ROWS:
        raise ConfigurationError(f"train_rows [{mode}] must be one of {list(TRAIN_ROWS)}.")
    return mode


def window_rows(users, max_len):
    """Indices of the rows that end a window, from RecBole's prefix rows grouped by user in time order.

    users: [R] user of each row. Within a user, row k (0-based) has target i_{k+2}; counting back from
    the user's last row, every ``max_len``-th row ends a window.
    """
    users = np.asarray(users)
    if len(users) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])  # [U] first row of each user's run
    ends = np.r_[starts[1:], len(users)]  # [U] one past its last row
    run_end = np.repeat(ends, ends - starts)  # [R]
    from_end = run_end - 1 - np.arange(len(users))  # [R] 0 at the user's last row
    return np.flatnonzero(from_end % max_len == 0)


def sequence_train_loader(config, train_data):
    """A training loader over the window rows of ``train_data``'s dataset (``train_rows: sequence``)."""
    dataset = train_data._dataset
    users = dataset.inter_feat[dataset.uid_field].numpy()  # [R]
    if len(users) > 1 and (np.diff(users) != 0).sum() + 1 != len(np.unique(users)):
        raise ConfigurationError(
            "train_rows: sequence needs the training rows grouped by user in time order, as RecBole's "
            "sequential datasets give them with eval_args.order = TO."
        )
    rows = window_rows(users, config["MAX_ITEM_LIST_LENGTH"])
    windows = dataset.copy(dataset.inter_feat[rows])
    return get_dataloader(config, "train")(config, windows, train_data._sampler, shuffle=config["shuffle"])


def training_target_counts(dataset, train_rows, n_items):
    """How often each item is a training target of ``dataset`` (the training split as the model reads it): [n_items].

    Every training target is counted once whatever the rows: with ``prefix`` rows each row's target, with
    ``sequence`` rows each window's target and the items after the first of its input (the first input item
    of a later window is the previous window's target). Only the training split is read.
    """
    inter = dataset.inter_feat
    targets = inter[dataset.iid_field].numpy()  # [R]
    counts = np.bincount(targets, minlength=n_items)  # [n_items]
    if train_rows == "sequence":
        item_seq = inter[dataset.iid_field + dataset.config["LIST_SUFFIX"]].numpy()[:, 1:]  # [R, L-1]
        counts += np.bincount(item_seq[item_seq > 0], minlength=n_items)  # padding is 0, past each row's length
    return counts

