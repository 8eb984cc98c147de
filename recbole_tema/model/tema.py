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
    * ``id_dropout`` (off by default, not in the paper): the item-ID modality is dropped at random in
      training and for items never a training target at evaluation, so such items are scored from
      their text and tags instead of an ID embedding that only learned to sink.
    * ``modality_fusion: sum`` and ``state_fusion: sum`` replace the two gates by LLM-EMF's additive
      forms (ID embedding plus learned-weight modalities; intra-domain plus cross-domain state), for
      the comparison on Food-Kitchen (benchmarks/results/tema_hyper_fusion_food_kitchen.md).

Where we deviate from the paper, and why:
    * training (``train_rows: sequence``, the default): each user's training sequence is read once
      per epoch, with a loss at every position; at position t the state is the one for the domain of
      item t + 1 (the intra-domain state of that domain's items up to t, gated with the cross-domain
      state at t). The paper trains on (history, next item) pairs; this gives the same pairs with
      one encoder pass per sequence instead of one per pair. ``train_rows: prefix`` is the pair form.
    * scoring reads no label: after a history the model keeps one user state per domain and scores
      every item with the state of the item's own domain (the paper picks the target's domain).
"""

import torch
import torch.nn as nn

from recbole_tema.data.training_rows import training_target_counts
from recbole_tema.errors import ConfigurationError
from recbole_tema.model.layers import (
    FrozenItemFeatures,
    GatedModalityFusion,
    ModalityProjection,
    TagFusion,
    WeightedModalitySum,
    enabled_feature_fields,
    id_and_feature_modalities,
    init_weights,
)
from recbole_tema.model.multi_attention import MultiAttentionRecommender

FUSIONS = ("gate", "sum")


class TEMA(MultiAttentionRecommender):
    r"""TEMA fuses ID, frozen text/CLIP/tag features and learnable tags into item vectors, encodes the
    merged and per-domain sequences with tag-enriched attention, and scores each domain's items with
    a gated mix of the cross-domain state and that domain's state.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        self.tag_field = config["TAG_FIELD"]
        self.tag_weight_field = config["TAG_WEIGHT_FIELD"]
        self.tag_fusion_mode = config["tag_fusion"]
        use_tags = config["use_tags"]
        use_tag_attention = config["tag_attention"]
        self.id_dropout = config["id_dropout"] or 0.0
        modality_fusion = config["modality_fusion"] or "gate"
        state_fusion = config["state_fusion"] or "gate"
        if self.loss_type != "CE":
            raise ConfigurationError(f"TEMA trains with loss_type CE only, got [{self.loss_type}].")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ConfigurationError(f"id_dropout [{self.id_dropout}] must be in [0, 1).")
        for key, value in (("modality_fusion", modality_fusion), ("state_fusion", state_fusion)):
            if value not in FUSIONS:
                raise ConfigurationError(f"{key} [{value}] must be one of {list(FUSIONS)}.")

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
        if self.id_dropout and n_modalities == 1:
            raise ConfigurationError("id_dropout needs a content modality (text, CLIP or tag features) besides the item ID.")
        # with id_dropout, items never a training target are scored from their content alone
        cold = torch.as_tensor(training_target_counts(dataset, self.train_rows, self.n_items) == 0) if self.id_dropout else None
        self.register_buffer("cold_items", cold if cold is not None else torch.zeros(0, dtype=torch.bool), persistent=False)
        if n_modalities == 1:
            self.fusion = None
        elif modality_fusion == "gate":
            self.fusion = GatedModalityFusion(self.hidden_size, n_modalities)
        else:
            self.fusion = WeightedModalitySum(n_modalities)

        # tag-enriched multi-attention: tag vectors (learned tags, else projected tag_emb) join Q and K
        self.tag_source = "tags" if self.tags is not None else ("tag_emb" if "tag_emb" in self.features.fields else None)
        self.tag_attention = bool(use_tag_attention and self.tag_source)
        self.build_encoders(config, self.tag_attention)
        both = config["intra_domain_encoder"] and config["cross_domain_encoder"]
        self.gate = nn.Linear(2 * self.hidden_size, self.hidden_size) if both and state_fusion == "gate" else None

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

    def modalities(self):
        """Every item's modality vectors: (names [M], vectors [n_items, M, H], present [n_items, M], tag vectors).

        The tag vectors [n_items, H] (learned tags, else projected ``tag_emb``) feed tag-enriched
        attention; None without tag attention.
        """
        names, vectors, present = id_and_feature_modalities(self.item_embedding.weight, self.features, self.projections)
        tag_vectors = None
        if self.tags is not None:
            tag_vectors, has_tags = self.tags()  # [n_items, H], [n_items]
            names.append(self.tag_field)
            vectors.append(tag_vectors)
            present.append(has_tags)
        elif self.tag_source == "tag_emb":
            tag_vectors = vectors[names.index("tag_emb")]  # [n_items, H]
        if not self.tag_attention:
            tag_vectors = None
        present = torch.stack(present, 1)  # [n_items, M]
        if self.id_dropout:
            present[:, 0] = self._id_kept(present[:, 1:].any(1))  # [n_items]
        return names, torch.stack(vectors, 1), present, tag_vectors  # [n_items, M, H], [n_items, M]

    def _id_kept(self, has_content):
        """Which items' ID embedding enters their vector [n_items] (an item without content always keeps it).

        Training drops each item's ID with probability ``id_dropout`` (anew every step), so the model
        learns to score items from content alone; evaluation drops it for the items never a training
        target, whose ID embedding only ever learned to sink (DropoutNet, Volkovs et al., NeurIPS 2017).
        """
        if self.training:
            dropped = torch.rand(has_content.shape, device=has_content.device) < self.id_dropout  # [n_items]
        else:
            dropped = self.cold_items  # [n_items]
        return ~(dropped & has_content)  # [n_items]

    def item_representations(self):
        """Fused vectors of every item [n_items, H] and, with tag attention, their tag vectors [n_items, H]."""
        _, vectors, present, tag_vectors = self.modalities()  # [n_items, M, H], [n_items, M]
        if self.fusion is None:
            return vectors[:, 0], tag_vectors
        return self.fusion(vectors, present), tag_vectors  # [n_items, H]

    def intra_gate(self, cross, intra):
        """The gate g [..., H] of the user state g * intra + (1 - g) * cross, from both states [..., H]."""
        return torch.sigmoid(self.gate(torch.cat([cross, intra], -1)))  # [..., H]

    def state_terms(self, cross, intra):
        """The two terms whose sum is the user state: (intra part, cross part), each [..., H]."""
        if self.gate is None:  # state_fusion: sum
            return intra, cross
        g = self.intra_gate(cross, intra)  # [..., H]
        return g * intra, (1 - g) * cross  # [..., H] each

    def combine(self, cross, intra):
        intra_part, cross_part = self.state_terms(cross, intra)  # [..., H] each
        return intra_part + cross_part  # [..., H]
