r"""
TEMA
################################################

Reference:
    Wangyu Wu et al. "Tag-Enriched Multi-Attention with Large Language Models for Cross-Domain
    Sequential Recommendation." IEEE Transactions on Consumer Electronics, 2025. arXiv:2510.09224.

What this implementation does (written from the paper's description, not its code):
    * item representation: the learnable item-ID embedding, projections of the frozen features
      the dataset has (``text_emb``, ``clip_txt``, ``clip_img``, ``tag_emb``) and a pooled vector
      of the item's learnable tag tokens (weighted tag fusion with ``tag_weights`` and/or a learned
      attention over the tags), fused by a learned gate over the modalities the item has;
    * tag-enriched multi-attention: one causal encoder per domain over that domain's sub-sequence
      of the merged history, one cross-domain encoder over the merged history, and in every
      encoder the items' tag vectors added to the attention queries and keys (so the attention
      score between two positions gains a learned term in their tags);
    * user representation for a target: a learned gate between the cross-domain state and the
      target domain's intra-domain state; cross-entropy over the target domain's items.
"""

import torch
import torch.nn as nn
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_tema.data.domains import ItemDomains
from recbole_tema.errors import ConfigurationError
from recbole_tema.model.layers import (
    FrozenItemFeatures,
    GatedModalityFusion,
    ModalityProjection,
    MultiDomainAttention,
    TagFusion,
    enabled_feature_fields,
    in_domain_cross_entropy,
    init_weights,
)


class TEMA(SequentialRecommender):
    r"""TEMA fuses ID, frozen text/CLIP/tag features and learnable tags into item vectors, encodes the
    merged and per-domain sequences with tag-enriched attention, and scores items of the target domain.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        self.loss_domain = config["loss_domain"]
        self.tag_field = config["TAG_FIELD"]
        self.tag_weight_field = config["TAG_WEIGHT_FIELD"]
        self.tag_fusion_mode = config["tag_fusion"]
        use_tags = config["use_tags"]
        use_tag_attention = config["tag_attention"]
        use_intra = config["intra_domain_encoder"]
        use_cross = config["cross_domain_encoder"]
        if self.loss_type != "CE":
            raise ConfigurationError(f"TEMA trains with loss_type CE only, got [{self.loss_type}].")
        if self.loss_domain not in ("target", "all"):
            raise ConfigurationError(f"loss_domain must be 'target' or 'all', got [{self.loss_domain}].")

        # domains: buffers, so they follow the model to its device
        domains = ItemDomains.from_dataset(dataset)
        self.n_domains = domains.num_domains
        self.register_buffer("item_domain", domains.item_domain.clone(), persistent=False)  # [n_items]
        self.register_buffer("domain_masks", domains.masks.clone(), persistent=False)  # [D, n_items]

        # item side: ID embedding, frozen features, tags
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.features = FrozenItemFeatures(dataset, enabled_feature_fields(config, dataset))
        self.projections = nn.ModuleDict(
            {
                field: ModalityProjection(self.features.dim(field), self.hidden_size, config["layer_norm_eps"])
                for field in self.features.fields
            }
        )
        self.tags = self._build_tag_fusion(dataset) if use_tags else None
        n_modalities = 1 + len(self.features.fields) + (self.tags is not None)
        self.fusion = GatedModalityFusion(self.hidden_size, n_modalities) if n_modalities > 1 else None

        # tag-enriched multi-attention: tag vectors (learned tags, else projected tag_emb) join Q and K
        self.tag_source = "tags" if self.tags is not None else ("tag_emb" if "tag_emb" in self.features.fields else None)
        self.tag_attention = bool(use_tag_attention and self.tag_source)
        self.encoders = MultiDomainAttention(config, self.n_domains, use_intra, use_cross, self.tag_attention)
        self.gate = nn.Linear(2 * self.hidden_size, self.hidden_size) if use_intra and use_cross else None
        # stands in for the intra-domain state of a user with no history in the target's domain
        self.empty_intra = nn.Parameter(torch.zeros(self.n_domains, self.hidden_size)) if use_intra else None

        # parameters initialization
        self.apply(lambda module: init_weights(module, self.initializer_range))

    def _build_tag_fusion(self, dataset):
        if dataset.item_feat is None or self.tag_field not in dataset.item_feat:
            return None  # no tags in this dataset: TEMA falls back to the other modalities
        item_feat = dataset.get_item_feature()
        # without a weight column, weighted fusion is uniform over the item's tags
        weights = item_feat[self.tag_weight_field] if self.tag_weight_field in dataset.item_feat else None
        return TagFusion(
            item_feat[self.tag_field], weights, dataset.num(self.tag_field), self.hidden_size, self.tag_fusion_mode
        )

    def item_representations(self):
        """Fused vectors of every item [n_items, H] and their tag vectors [n_items, H] (or None)."""
        ids = self.item_embedding.weight  # [n_items, H]
        modalities, present = [ids], [torch.ones_like(self.item_domain, dtype=torch.bool)]
        for field in self.features.fields:
            values, has = self.features.get(field)  # [n_items, dim], [n_items]
            modalities.append(self.projections[field](values, has))  # [n_items, H]
            present.append(has)
        tag_vectors = None
        if self.tags is not None:
            tag_vectors, has_tags = self.tags()  # [n_items, H], [n_items]
            modalities.append(tag_vectors)
            present.append(has_tags)
        elif self.tag_source == "tag_emb":
            tag_vectors = modalities[1 + self.features.fields.index("tag_emb")]  # [n_items, H]
        if self.fusion is None:
            return ids, tag_vectors
        fused = self.fusion(torch.stack(modalities, 1), torch.stack(present, 1))  # [n_items, H]
        return fused, tag_vectors

    def forward(self, item_seq, item_seq_len, target_domain, item_table=None, tag_vectors=None):
        if item_table is None:
            item_table, tag_vectors = self.item_representations()  # [n_items, H], [n_items, H]
        tag_table = tag_vectors if self.tag_attention else None  # [n_items, H] or None
        cross, intra, has_intra = self.encoders(
            item_table, self.item_domain, item_seq, item_seq_len, target_domain, tag_table
        )  # [B, H] or None, [B, H] or None, [B] or None
        if intra is not None:
            intra = torch.where(has_intra.unsqueeze(-1), intra, self.empty_intra[target_domain])  # [B, H]
        if cross is None:
            return intra  # [B, H]
        if intra is None:
            return cross  # [B, H]
        g = torch.sigmoid(self.gate(torch.cat([cross, intra], -1)))  # [B, H]
        return g * intra + (1 - g) * cross  # [B, H]

    def _target_domain(self, interaction):
        return self.item_domain[interaction[self.POS_ITEM_ID]]  # [B]

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        pos_items = interaction[self.POS_ITEM_ID]  # [B]
        target_domain = self._target_domain(interaction)  # [B]
        item_table, tag_vectors = self.item_representations()  # [n_items, H], [n_items, H]
        user = self.forward(item_seq, item_seq_len, target_domain, item_table, tag_vectors)  # [B, H]
        logits = user @ item_table.t()  # [B, n_items]
        if self.loss_domain == "all":
            return nn.functional.cross_entropy(logits, pos_items)
        return in_domain_cross_entropy(logits, pos_items, target_domain, self.domain_masks)

    def predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        test_item = interaction[self.ITEM_ID]  # [B]
        item_table, tag_vectors = self.item_representations()  # [n_items, H], [n_items, H]
        user = self.forward(item_seq, item_seq_len, self.item_domain[test_item], item_table, tag_vectors)  # [B, H]
        return (user * item_table[test_item]).sum(-1)  # [B]

    def full_sort_predict(self, interaction):
        # The target item's domain picks the intra-domain state: the protocol gives the target's
        # domain at evaluation and ranks the target only among that domain's items.
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        target_domain = self._target_domain(interaction)  # [B]
        item_table, tag_vectors = self.item_representations()  # [n_items, H], [n_items, H]
        user = self.forward(item_seq, item_seq_len, target_domain, item_table, tag_vectors)  # [B, H]
        scores = user @ item_table.t()  # [B, n_items]
        return scores.masked_fill(~self.domain_masks[target_domain], float("-inf"))  # [B, n_items]
