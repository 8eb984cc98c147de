"""What the plugin's cross-domain sequential models share: domains, next-item targets, in-domain loss, scoring.

A cross-domain model keeps one user state per domain. It is trained on the in-domain softmax (the
target is scored against the items of its own domain only, as the protocol ranks it) and scores,
for a user, every item with the state of the item's own domain, so no evaluation label is read.
"""

import math

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_tema.data.domains import ItemDomains
from recbole_tema.data.training_rows import train_rows_of, training_target_counts
from recbole_tema.errors import ConfigurationError

TRAIN_SOFTMAX = ("full", "sampled", "infonce")


class CrossDomainSequentialRecommender(SequentialRecommender):
    """Base of TEMA, LLMEMF and ABXI.

    Config keys read here: ``train_rows`` (``sequence``: loss at every position of each training
    window; ``prefix``: RecBole's rows, loss at the last position), ``train_softmax`` (``full``: all
    items of the target's domain; ``sampled``: ``train_neg_per_domain`` uniform negatives per domain
    shared by the batch, with the importance-sampling correction; ``infonce``: the same negatives
    without it, so the loss is a softmax over the target and N negatives, ABXI's InfoNCE), ``train_neg_per_domain`` and
    ``temperature`` (the training logits are divided by it; ranking does not depend on it) and
    ``logit_adjustment`` (tau >= 0: the training logits get ``tau * log(1 + n_i)``, n_i the item's count as
    a training target, while ranking uses the plain scores; Menon et al., "Long-tail learning via logit
    adjustment", ICLR 2021). A full softmax over a domain pushes down every item at every step and
    lifts an item only when it is a target, so rare items sink; the adjustment lets the learned scores
    carry the preference without the popularity, which the sampled protocols (uniform negatives,
    mostly rare items) reward.
    """

    supports_sequence_rows = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.train_rows = train_rows_of(config)
        self.train_softmax = config["train_softmax"] or "full"
        self.train_neg_per_domain = config["train_neg_per_domain"]
        self.temperature = config["temperature"] or 1.0
        self.logit_adjustment = config["logit_adjustment"] or 0.0
        if self.train_softmax not in TRAIN_SOFTMAX:
            raise ConfigurationError(f"train_softmax [{self.train_softmax}] must be one of {list(TRAIN_SOFTMAX)}.")
        if self.train_softmax != "full" and not (self.train_neg_per_domain or 0) > 0:
            raise ConfigurationError(f"train_softmax: {self.train_softmax} needs train_neg_per_domain > 0.")

        # domains: buffers, so they follow the model to its device
        domains = ItemDomains.from_dataset(dataset)
        self.n_domains = domains.num_domains
        self.domain_names = domains.names
        self.register_buffer("item_domain", domains.item_domain.clone(), persistent=False)  # [n_items]
        local = torch.full_like(domains.item_domain, -1)  # [n_items] index of an item within its domain
        for d in range(self.n_domains):
            pool = torch.nonzero(domains.masks[d]).squeeze(1)  # [N_d]
            local[pool] = torch.arange(len(pool))
            self.register_buffer(f"pool_{d}", pool, persistent=False)
        self.register_buffer("item_local", local, persistent=False)  # [n_items]
        if self.logit_adjustment < 0:
            raise ConfigurationError(f"logit_adjustment [{self.logit_adjustment}] must be >= 0.")
        counts = training_target_counts(dataset, self.train_rows, self.n_items) if self.logit_adjustment else None
        log_prior = torch.log1p(torch.as_tensor(counts, dtype=torch.float)) if counts is not None else torch.zeros(0)
        self.register_buffer("log_prior", log_prior, persistent=False)  # [n_items] (empty when off)

    def domain_pool(self, d):
        """Internal ids of the items of domain ``d``: [N_d]."""
        return getattr(self, f"pool_{d}")

    def uniform_negatives(self, d, rows=None):
        """``train_neg_per_domain`` items of domain ``d`` drawn uniformly, with replacement: [N], or with
        ``rows`` one draw per row: [rows, N]."""
        pool = self.domain_pool(d)  # [N_d]
        shape = (self.train_neg_per_domain,) if rows is None else (rows, self.train_neg_per_domain)
        return pool[torch.randint(len(pool), shape, device=pool.device)]  # [N] or [rows, N]

    # ------------------------------------------------------------------ training rows
    def next_items(self, interaction):
        """The item after each position of a training row: [B, L].

        Position t < last holds list item t + 1, the last real position the row's target, later ones 0.
        """
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        B, L = item_seq.shape
        shifted = torch.cat([item_seq[:, 1:], item_seq.new_zeros(B, 1)], 1)  # [B, L]
        return torch.where(self._at_last(interaction), interaction[self.POS_ITEM_ID].view(B, 1), shifted)  # [B, L]

    def loss_positions(self, interaction):
        """[B, L] bool: the positions that carry a training loss, per ``train_rows``.

        ``sequence``: every real position (each row is a window of a user's sequence); ``prefix``:
        the last one (each row is one prefix, RecBole's rows).
        """
        if self.train_rows == "prefix":
            return self._at_last(interaction)
        L = interaction[self.ITEM_SEQ].shape[1]
        steps = torch.arange(L, device=interaction[self.ITEM_SEQ].device)  # [L]
        return steps.view(1, L) < interaction[self.ITEM_SEQ_LEN].view(-1, 1)  # [B, L]

    def _at_last(self, interaction):
        L = interaction[self.ITEM_SEQ].shape[1]
        last = (interaction[self.ITEM_SEQ_LEN] - 1).clamp(min=0)  # [B]
        return torch.arange(L, device=last.device).view(1, L) == last.view(-1, 1)  # [B, L]

    # ------------------------------------------------------------------ loss
    def in_domain_nll(self, states, targets, item_table):
        """Softmax cross-entropy of each target against the items of its own domain: [Q].

        states: [Q, H] user states; targets: [Q] item ids (each of some domain); item_table: [n_items, H].
        """
        domains = self.item_domain[targets]  # [Q]
        domain_nll = self._full_domain_nll if self.train_softmax == "full" else self._sampled_domain_nll
        nll = states.new_zeros(len(targets))  # [Q]
        for d in range(self.n_domains):
            rows = (domains == d).nonzero().squeeze(1)  # [Q_d]
            if rows.numel() == 0:
                continue
            nll = nll.index_put((rows,), domain_nll(states[rows], targets[rows], item_table, d))  # [Q]
        return nll

    def _full_domain_nll(self, states, targets, item_table, d):
        pool = self.domain_pool(d)  # [N_d]
        logits = states @ item_table[pool].t() / self.temperature  # [Q_d, N_d]
        if self.logit_adjustment:
            logits = logits + self.logit_adjustment * self.log_prior[pool]  # [Q_d, N_d]
        return F.cross_entropy(logits, self.item_local[targets], reduction="none")  # [Q_d]

    def _sampled_domain_nll(self, states, targets, item_table, d):
        # Uniform negatives shared by the batch. `sampled`: importance-sampling correction: with N of the
        # domain's N_d - 1 other items drawn uniformly, log((N_d - 1) / N) on each negative logit makes the
        # sum of their exponentials an unbiased estimate of the full softmax's denominator. `infonce`: no
        # correction (ABXI's loss): a target only has to beat N mostly rare items, so the head is pushed
        # down less often than by the full softmax.
        pool = self.domain_pool(d)  # [N_d]
        negatives = self.uniform_negatives(d)  # [N]
        pos_logit = (states * item_table[targets]).sum(-1, keepdim=True) / self.temperature  # [Q_d, 1]
        neg_logit = states @ item_table[negatives].t() / self.temperature  # [Q_d, N]
        if self.train_softmax == "sampled":
            neg_logit = neg_logit + math.log(max(len(pool) - 1, 1) / len(negatives))  # [Q_d, N]
        if self.logit_adjustment:
            pos_logit = pos_logit + self.logit_adjustment * self.log_prior[targets].unsqueeze(1)  # [Q_d, 1]
            neg_logit = neg_logit + self.logit_adjustment * self.log_prior[negatives]  # [Q_d, N]
        neg_logit = neg_logit.masked_fill(negatives.view(1, -1) == targets.view(-1, 1), float("-inf"))  # [Q_d, N]
        logits = torch.cat([pos_logit, neg_logit], 1)  # [Q_d, 1 + N]
        return -F.log_softmax(logits, dim=1)[:, 0]  # [Q_d]

    # ------------------------------------------------------------------ scoring
    def score_per_domain(self, states, item_table):
        """Scores of every item with the user state of the item's own domain.

        states: [B, D, H]; item_table: [n_items, H]. Items of no domain (padding) score -inf.
        """
        scores = states.new_full((states.shape[0], item_table.shape[0]), float("-inf"))  # [B, n_items]
        for d in range(self.n_domains):
            pool = self.domain_pool(d)  # [N_d]
            scores[:, pool] = states[:, d] @ item_table[pool].t()  # [B, N_d]
        return scores

    def score_items(self, states, item_table, items):
        """Scores of given items: states [B, D, H], items [B] -> [B]."""
        domains = self.item_domain[items].clamp(min=0)  # [B]
        chosen = states[torch.arange(len(items), device=items.device), domains]  # [B, H]
        return (chosen * item_table[items]).sum(-1)  # [B]
