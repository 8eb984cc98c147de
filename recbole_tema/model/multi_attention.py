"""The recommender side of TEMA, LLMEMF and LLM4CDSR: intra- and cross-domain encoders over item vectors.

A subclass builds ``self.encoders`` (:class:`~recbole_tema.model.layers.MultiDomainAttention`,
through :meth:`build_encoders`, or a module with its ``at_every_position`` and ``at_end``) and
``self.empty_intra``, and defines ``item_representations()`` and ``combine()``; this
class turns their states into one user state per domain, trains it at every position of a
sequence (``train_rows: sequence``) or at the end of each prefix row, and scores items with it.
"""

import torch
import torch.nn as nn

from recbole_tema.model.cross_domain import CrossDomainSequentialRecommender
from recbole_tema.model.layers import MultiDomainAttention


class MultiAttentionRecommender(CrossDomainSequentialRecommender):
    def build_encoders(self, config, tag_attention=False):
        """The encoders, and the learned stand-in state of a domain the user has no item of yet."""
        use_intra, use_cross = config["intra_domain_encoder"], config["cross_domain_encoder"]
        # Whole sequences are read by windows of MAX_ITEM_LIST_LENGTH; intra_max_len cuts prefix rows only.
        intra_max_len = config["intra_max_len"] if self.train_rows == "prefix" else None
        self.encoders = MultiDomainAttention(config, self.n_domains, use_intra, use_cross, tag_attention, intra_max_len)
        self.empty_intra = nn.Parameter(torch.zeros(self.n_domains, config["hidden_size"])) if use_intra else None

    def item_representations(self):
        """(item vectors [n_items, H], tag vectors for tag-enriched attention [n_items, H] or None)."""
        raise NotImplementedError

    def combine(self, cross, intra):
        """One user state from the cross-domain and intra-domain states, both [..., H]."""
        raise NotImplementedError

    def user_state(self, cross, intra, has_intra, domain):
        """cross, intra: [..., H] or None; has_intra, domain: [...] -> the state for that domain [..., H]."""
        if intra is not None:
            intra = torch.where(has_intra.unsqueeze(-1), intra, self.empty_intra[domain])  # [..., H]
        if cross is None:
            return intra
        if intra is None:
            return cross
        return self.combine(cross, intra)

    def end_states(self, item_seq, item_seq_len, item_table, tag_table):
        """Per domain, the cross-domain and the intra-domain state after the sequence (before combining).

        Returns ([B, D, H] or None, [B, D, H] or None): None for a switched-off encoder; a domain the
        user has no item of gets the learned stand-in intra state.
        """
        B, D = item_seq.shape[0], self.n_domains
        every = torch.ones(B, D, dtype=torch.bool, device=item_seq.device)  # [B, D]
        cross, intra, has_intra = self.encoders.at_end(
            item_table, self.item_domain, item_seq, item_seq_len, every, tag_table
        )  # [B, H], [B, D, H], [B, D]
        if cross is not None:
            cross = cross.unsqueeze(1).expand(B, D, -1)  # [B, D, H]
        if intra is not None:
            intra = torch.where(has_intra.unsqueeze(-1), intra, self.empty_intra.expand(B, D, -1))  # [B, D, H]
        return cross, intra

    def forward(self, item_seq, item_seq_len, item_table=None, tag_table=None):
        """The user's state for every domain after the sequence: [B, D, H]. Reads no label."""
        if item_table is None:
            item_table, tag_table = self.item_representations()  # [n_items, H], [n_items, H] or None
        cross, intra = self.end_states(item_seq, item_seq_len, item_table, tag_table)  # [B, D, H] or None each
        if cross is None or intra is None:
            return intra if cross is None else cross
        return self.combine(cross, intra)  # [B, D, H]

    # ------------------------------------------------------------------ training
    def next_item_nll(self, interaction):
        """In-domain NLL of every training target of the batch: ([B, L], has_target [B, L] bool)."""
        item_table, tag_table = self.item_representations()  # [n_items, H], [n_items, H] or None
        states, targets, has_target = self.target_states(interaction, item_table, tag_table)  # [Q, H], [Q], [B, L]
        nll = self.in_domain_nll(states, targets, item_table)  # [Q]
        return item_table.new_zeros(has_target.shape).index_put(has_target.nonzero(as_tuple=True), nll), has_target

    def target_states(self, interaction, item_table, tag_table):
        """The user state for every training target of the batch, in ``has_target.nonzero()`` order.

        Returns (states [Q, H], targets [Q], has_target [B, L] bool: the positions that carry a target).
        """
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        targets = self.next_items(interaction)  # [B, L]
        has_target = self.loss_positions(interaction) & (self.item_domain[targets] >= 0)  # [B, L]
        rows, steps = has_target.nonzero(as_tuple=True)  # [Q], [Q]
        if self.train_rows == "sequence":
            states = self._states_at_every_position(item_seq, targets, item_table, tag_table)[rows, steps]  # [Q, H]
        else:
            states = self._states_for_targets(interaction, item_table, tag_table)[rows]  # [Q, H]
        return states, targets[rows, steps], has_target

    def calculate_loss(self, interaction):
        nll, has_target = self.next_item_nll(interaction)  # [B, L], [B, L]
        return nll.sum() / has_target.sum().clamp(min=1)

    def _states_at_every_position(self, item_seq, targets, item_table, tag_table):
        """At each position t, the state for the domain of the item after t (task-guided): [B, L, H]."""
        cross, intra, has_intra = self.encoders.at_every_position(
            item_table, self.item_domain, item_seq, tag_table
        )  # [B, L, H], [B, D, L, H], [B, D, L]
        next_domain = self.item_domain[targets].clamp(min=0)  # [B, L]
        if intra is not None:
            index = next_domain.unsqueeze(1)  # [B, 1, L]
            has_intra = has_intra.gather(1, index).squeeze(1)  # [B, L]
            intra = intra.gather(1, index.unsqueeze(-1).expand(-1, -1, -1, intra.shape[-1])).squeeze(1)  # [B, L, H]
        return self.user_state(cross, intra, has_intra, next_domain)  # [B, L, H]

    def _states_for_targets(self, interaction, item_table, tag_table):
        """Each prefix row's state for its target's domain (the only intra encoder it runs): [B, H]."""
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        target_domain = self.item_domain[interaction[self.POS_ITEM_ID]].clamp(min=0)  # [B]
        wanted = nn.functional.one_hot(target_domain, self.n_domains).bool()  # [B, D]
        cross, intra, has_intra = self.encoders.at_end(
            item_table, self.item_domain, item_seq, interaction[self.ITEM_SEQ_LEN], wanted, tag_table
        )  # [B, H], [B, D, H], [B, D]
        if intra is not None:
            rows = torch.arange(len(target_domain), device=item_seq.device)  # [B]
            intra, has_intra = intra[rows, target_domain], has_intra[rows, target_domain]  # [B, H], [B]
        return self.user_state(cross, intra, has_intra, target_domain)  # [B, H]

    # ------------------------------------------------------------------ inference
    def predict(self, interaction):
        item_table, tag_table = self.item_representations()  # [n_items, H], [n_items, H] or None
        states = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], item_table, tag_table)
        return self.score_items(states, item_table, interaction[self.ITEM_ID])  # [B]

    def full_sort_predict(self, interaction):
        item_table, tag_table = self.item_representations()  # [n_items, H], [n_items, H] or None
        states = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], item_table, tag_table)
        return self.score_per_domain(states, item_table)  # [B, n_items]
