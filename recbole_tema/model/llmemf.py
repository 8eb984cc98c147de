r"""
LLMEMF
################################################

Reference:
    Wangyu Wu et al. "LLM-Enhanced Multimodal Fusion for Cross-Domain Sequential Recommendation."
    Expert Systems with Applications, 2026. arXiv:2506.17966.

What this implementation does (written from the paper's description, not its code):
    * item representation: the learnable item-ID embedding plus learned-weight sums of projected
      frozen CLIP image and CLIP text embeddings (the text enriched by an LLM before encoding) and,
      where the dataset has it, the text-encoder embedding ``text_emb``; no tags;
    * multiple attention: one causal encoder per domain over that domain's sub-sequence of the
      merged history and one over the merged history (modules shared with TEMA);
    * the single-domain preference of the target's domain and the cross-domain preference are added
      to score the target domain's items; cross-entropy over the target domain's items.
Differences from TEMA: no tags and no tag-enriched attention, an additive (not gated) modality sum,
and an additive (not gated) combination of the two preferences.
"""

import torch
import torch.nn as nn
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_tema.data.domains import ItemDomains
from recbole_tema.errors import ConfigurationError
from recbole_tema.model.layers import (
    FrozenItemFeatures,
    ModalityProjection,
    MultiDomainAttention,
    enabled_feature_fields,
    in_domain_cross_entropy,
    init_weights,
)


class WeightedModalitySum(nn.Module):
    """ID embedding + sum_m w_m * projected modality m, with one learned scalar weight per modality."""

    def __init__(self, n_modalities):
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n_modalities))

    def forward(self, ids, modalities):
        # ids: [n_items, H]; modalities: [n_items, M, H] (missing rows are zero, so they add nothing)
        return ids + (self.weights.view(1, -1, 1) * modalities).sum(1)  # [n_items, H]


class LLMEMF(SequentialRecommender):
    r"""LLMEMF adds projected frozen CLIP image/text features to the item-ID embedding, encodes the
    single-domain and merged sequences with separate attention encoders, and adds their preferences.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        use_intra = config["intra_domain_encoder"]
        use_cross = config["cross_domain_encoder"]
        if self.loss_type != "CE":
            raise ConfigurationError(f"LLMEMF trains with loss_type CE only, got [{self.loss_type}].")

        # domains: buffers, so they follow the model to its device
        domains = ItemDomains.from_dataset(dataset)
        self.register_buffer("item_domain", domains.item_domain.clone(), persistent=False)  # [n_items]
        self.register_buffer("domain_masks", domains.masks.clone(), persistent=False)  # [D, n_items]

        # item side: ID embedding and frozen multimodal features (never tags)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        # tag_emb is a tag feature: LLMEMF has no tags whatever the config says
        fields = [field for field in enabled_feature_fields(config, dataset) if field != "tag_emb"]
        self.features = FrozenItemFeatures(dataset, fields)
        self.projections = nn.ModuleDict(
            {
                field: ModalityProjection(self.features.dim(field), self.hidden_size, config["layer_norm_eps"])
                for field in self.features.fields
            }
        )
        self.fusion = WeightedModalitySum(len(self.features.fields)) if self.features.fields else None

        # multiple attention over single-domain and merged sequences
        self.encoders = MultiDomainAttention(config, domains.num_domains, use_intra, use_cross)
        # stands in for the single-domain preference of a user with no history in the target's domain
        self.empty_intra = nn.Parameter(torch.zeros(domains.num_domains, self.hidden_size)) if use_intra else None

        # parameters initialization
        self.apply(lambda module: init_weights(module, self.initializer_range))

    def item_representations(self):
        ids = self.item_embedding.weight  # [n_items, H]
        if self.fusion is None:
            return ids
        projected = [self.projections[field](*self.features.get(field)) for field in self.features.fields]
        return self.fusion(ids, torch.stack(projected, 1))  # [n_items, H]

    def forward(self, item_seq, item_seq_len, target_domain, item_table=None):
        if item_table is None:
            item_table = self.item_representations()  # [n_items, H]
        cross, intra, has_intra = self.encoders(
            item_table, self.item_domain, item_seq, item_seq_len, target_domain
        )  # [B, H] or None, [B, H] or None, [B] or None
        if intra is not None:
            intra = torch.where(has_intra.unsqueeze(-1), intra, self.empty_intra[target_domain])  # [B, H]
        if cross is None:
            return intra  # [B, H]
        if intra is None:
            return cross  # [B, H]
        return cross + intra  # [B, H]

    def _target_domain(self, interaction):
        return self.item_domain[interaction[self.POS_ITEM_ID]]  # [B]

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        pos_items = interaction[self.POS_ITEM_ID]  # [B]
        target_domain = self._target_domain(interaction)  # [B]
        item_table = self.item_representations()  # [n_items, H]
        user = self.forward(item_seq, item_seq_len, target_domain, item_table)  # [B, H]
        logits = user @ item_table.t()  # [B, n_items]
        return in_domain_cross_entropy(logits, pos_items, target_domain, self.domain_masks)

    def predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        test_item = interaction[self.ITEM_ID]  # [B]
        item_table = self.item_representations()  # [n_items, H]
        user = self.forward(item_seq, item_seq_len, self.item_domain[test_item], item_table)  # [B, H]
        return (user * item_table[test_item]).sum(-1)  # [B]

    def full_sort_predict(self, interaction):
        # The target item's domain picks the single-domain preference (given at evaluation).
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        target_domain = self._target_domain(interaction)  # [B]
        item_table = self.item_representations()  # [n_items, H]
        user = self.forward(item_seq, item_seq_len, target_domain, item_table)  # [B, H]
        scores = user @ item_table.t()  # [B, n_items]
        return scores.masked_fill(~self.domain_masks[target_domain], float("-inf"))  # [B, n_items]
