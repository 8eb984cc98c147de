"""The cross-domain evaluation protocol (docs/protocol.md), for any sequential model.

A target is ranked only against items of its own domain: every item of that domain (``full``), or
N negatives drawn uniformly from it (``uniN``), excluding the items of that domain in the user's
history. rank = 1 + number of candidates scoring >= the target, so ties (and NaN scores) count
against the target. Hit / NDCG / MRR are reported overall and per target domain (``hit@10/food``).
"""

from collections import OrderedDict

import numpy as np
import scipy.sparse as sp
import torch

from recbole_tema.data.domains import ItemDomains
from recbole_tema.errors import ConfigurationError

SUPPORTED_METRICS = ("hit", "recall", "precision", "ndcg", "mrr")
TARGETS_KEY = "targets"  # number of evaluated targets, overall and per domain


def parse_eval_mode(mode):
    """``full`` -> None, ``uniN`` -> N; anything else is outside the protocol."""
    if mode == "full":
        return None
    if isinstance(mode, str) and mode.startswith("uni") and mode[3:].isdigit() and int(mode[3:]) > 0:
        return int(mode[3:])
    raise ConfigurationError(
        f"eval_args.mode [{mode}] is not supported by the cross-domain protocol: use `full` "
        f"(all items of the target's domain) or `uniN` (N negatives of the target's domain, e.g. uni999)."
    )


def _user_history(train_dataset):
    """CSR [n_users, n_items]: the items each user interacted with in the training split."""
    inter = train_dataset.inter_feat
    uid_field, iid_field = train_dataset.uid_field, train_dataset.iid_field
    users = inter[uid_field].numpy()  # [R]
    rows, cols = [users], [inter[iid_field].numpy()]
    list_field = iid_field + train_dataset.config["LIST_SUFFIX"]
    if list_field in inter:
        # A sequential training set keeps the first item of each user only inside item lists.
        item_lists = inter[list_field].numpy()  # [R, L]
        rows.append(np.repeat(users, item_lists.shape[1]))
        cols.append(item_lists.reshape(-1))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    keep = cols > 0
    shape = (train_dataset.user_num, train_dataset.item_num)
    history = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.int8), (rows[keep], cols[keep])), shape=shape)
    history.sum_duplicates()
    return history


class CrossDomainProtocol:
    """Candidates, ranks and per-domain metrics for one dataset; shared by every model run on it."""

    def __init__(self, config, train_dataset):
        self.domains = ItemDomains.from_dataset(train_dataset)
        self.uid_field = train_dataset.uid_field
        self.iid_field = train_dataset.iid_field
        self.list_field = self.iid_field + config["LIST_SUFFIX"]
        self.len_field = config["ITEM_LIST_LENGTH_FIELD"]
        self.negatives = dict(config["cd_eval_negatives"])  # {'valid': N or None, 'test': N or None}
        self.seed = config["eval_seed"] if config["eval_seed"] is not None else config["seed"]
        self.metrics = [m.lower() for m in config["metrics"]]
        unsupported = [m for m in self.metrics if m not in SUPPORTED_METRICS]
        if unsupported:
            raise ConfigurationError(
                f"Metrics {unsupported} are not defined by the cross-domain protocol; "
                f"choose among {list(SUPPORTED_METRICS)}."
            )
        self.topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
        self.decimals = config["metric_decimal_place"]
        self.history = _user_history(train_dataset)
        self.domain_pools = [np.flatnonzero(mask.numpy()) for mask in self.domains.masks]
        self._candidates = {}

    # ----------------------------------------------------------------- candidates
    def candidates(self, eval_dataset, phase):
        """Sampled candidates of every row of an eval split: (LongTensor [R, N] padded with 0, row of user).

        Returns None in ``full`` mode. Each row's draw is seeded by (seed, user, target, history length),
        so it is the same for every model, every epoch and every batch order.
        """
        n_neg = self.negatives[phase]  # phase: 'valid' or 'test'; N or None (full)
        if n_neg is None:
            return None
        key = (id(eval_dataset), n_neg)
        if key not in self._candidates:
            self._candidates[key] = self._draw(eval_dataset, n_neg)
        return self._candidates[key]

    def _draw(self, eval_dataset, n_neg):
        inter = eval_dataset.inter_feat
        users = inter[self.uid_field].numpy()  # [R]
        targets = inter[self.iid_field].numpy()  # [R]
        item_lists = inter[self.list_field].numpy()  # [R, L]
        lengths = inter[self.len_field].numpy()  # [R]
        if len(np.unique(users)) != len(users):
            raise ConfigurationError(
                "The cross-domain protocol expects one evaluation target per user and split "
                "(leave-one-out: eval_args.split = {'LS': 'valid_and_test'}, order TO)."
            )
        target_domains = self.domains.item_domain[torch.from_numpy(targets)].numpy()  # [R]
        candidates = np.zeros((len(users), n_neg), dtype=np.int64)  # [R, N], 0 = no candidate
        for row, (user, target, domain) in enumerate(zip(users, targets, target_domains)):
            pool = self.domain_pools[domain]
            seen = self.history.indices[self.history.indptr[user] : self.history.indptr[user + 1]]
            excluded = np.union1d(np.union1d(seen, item_lists[row][: lengths[row]]), [target])
            excluded = excluded[self.domains.item_domain[excluded].numpy() == domain]
            wanted = min(n_neg, len(pool) - len(excluded))
            rng = np.random.default_rng([self.seed, int(user), int(target), int(lengths[row])])
            # A uniform ordered draw of wanted+|excluded| distinct items, minus the excluded ones,
            # is a uniform draw of `wanted` allowed items.
            draw = pool[rng.choice(len(pool), size=min(len(pool), wanted + len(excluded)), replace=False)]
            draw = draw[~np.isin(draw, excluded)][:wanted]
            candidates[row, : len(draw)] = draw
        row_of_user = np.full(eval_dataset.user_num, -1, dtype=np.int64)
        row_of_user[users] = np.arange(len(users))
        return torch.from_numpy(candidates), torch.from_numpy(row_of_user)

    def check_targets(self, targets):
        domains = self.domains.item_domain[targets]  # [B]
        if (domains < 0).any():
            raise ConfigurationError(
                f"Target item(s) {targets[domains < 0].tolist()[:5]} (internal ids) have no "
                f"`{self.domains.field}` in the .item file; every item needs a domain."
            )
        return domains

    # ----------------------------------------------------------------- ranking
    def rank(self, scores, targets, candidates=None):
        """Rank of each target among its candidates.

        scores: [B, n_items]; targets: [B]; candidates: [B, N] item ids (0 = none) or None for full.
        """
        target_scores = scores.gather(1, targets.unsqueeze(1))  # [B, 1]
        if candidates is None:
            domains = self.domains.item_domain.to(scores.device)[targets]  # [B]
            in_domain = self.domains.masks.to(scores.device)[domains]  # [B, n_items]
            in_domain = in_domain.scatter(1, targets.unsqueeze(1), False)  # [B, n_items], target is no rival
            beats = ~(scores < target_scores) & in_domain  # [B, n_items]; NaN counts against the target
        else:
            candidate_scores = scores.gather(1, candidates)  # [B, N]
            beats = ~(candidate_scores < target_scores) & (candidates > 0)  # [B, N]
        return 1 + beats.sum(dim=1)  # [B]

    # ----------------------------------------------------------------- metrics
    def _metric_values(self, ranks):
        ranks = ranks.double()  # [T]
        values = OrderedDict()
        for metric in self.metrics:
            for k in self.topk:
                hit = (ranks <= k).double()  # [T]
                if metric in ("hit", "recall"):
                    value = hit
                elif metric == "precision":
                    value = hit / k
                elif metric == "ndcg":
                    value = hit / torch.log2(ranks + 1)
                else:  # mrr@k
                    value = hit / ranks
                values[f"{metric}@{k}"] = value.mean().item() if len(ranks) else 0.0
        values["mrr"] = (1.0 / ranks).mean().item() if len(ranks) else 0.0
        return values

    def summarize(self, ranks, target_domains):
        """OrderedDict of overall and per-domain metrics (+ target counts) from ranks [T] and domains [T]."""
        result = OrderedDict()
        for key, value in self._metric_values(ranks).items():
            result[key] = round(value, self.decimals)
        result[TARGETS_KEY] = len(ranks)
        for index, name in enumerate(self.domains.names):
            in_domain = target_domains == index
            for key, value in self._metric_values(ranks[in_domain]).items():
                result[f"{key}/{name}"] = round(value, self.decimals)
            result[f"{TARGETS_KEY}/{name}"] = int(in_domain.sum())
        return result
