r"""
LLMEMF
################################################

Reference:
    Wangyu Wu et al. "LLM-Enhanced Multimodal Fusion for Cross-Domain Sequential Recommendation."
    Expert Systems with Applications, 2026. arXiv:2506.17966.

What this implementation does (written from the paper's description, not its code):
    * item representation: the learnable item-ID embedding plus learned-weight sums of projected
      frozen CLIP image and text embeddings and, where the dataset has it, the text-encoder embedding
      ``text_emb``; no tags. The paper's text modality is the CLIP embedding of an LLM-written text
      (key terms, summary, likely buyers' interests): the ``llm_text_emb`` column of the builders'
      ``llm_text`` stage. Where the dataset has it, it replaces ``clip_txt`` (CLIP on the raw title);
      where not, ``clip_txt`` stands in for it;
    * multiple attention: one causal encoder per domain over that domain's sub-sequence of the
      merged history and one over the merged history (modules shared with TEMA);
    * the single-domain preference of the target's domain and the cross-domain preference are added
      to score the target domain's items; cross-entropy over the target domain's items.
Differences from TEMA: no tags and no tag-enriched attention, an additive (not gated) modality sum,
and an additive (not gated) combination of the two preferences. Training rows and label-free
scoring as TEMA's (see its docstring): one state per domain, a loss at every position by default.
"""

import torch
import torch.nn as nn

from recbole_tema.errors import ConfigurationError
from recbole_tema.model.layers import (
    FrozenItemFeatures,
    ModalityProjection,
    WeightedModalitySum,
    enabled_feature_fields,
    id_and_feature_modalities,
    init_weights,
)
from recbole_tema.model.multi_attention import MultiAttentionRecommender


class LLMEMF(MultiAttentionRecommender):
    r"""LLMEMF adds projected frozen CLIP image/text features to the item-ID embedding, encodes the
    single-domain and merged sequences with separate attention encoders, and adds their preferences.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        if self.loss_type != "CE":
            raise ConfigurationError(f"LLMEMF trains with loss_type CE only, got [{self.loss_type}].")

        # item side: ID embedding and frozen multimodal features (never tags)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        # tag_emb is a tag feature: LLMEMF has no tags whatever the config says
        fields = [field for field in enabled_feature_fields(config, dataset) if field != "tag_emb"]
        if "llm_text_emb" in fields:  # the paper's text modality is the LLM-written text: it replaces the raw one
            fields = [field for field in fields if field != "clip_txt"]
        self.features = FrozenItemFeatures(dataset, fields)
        self.projections = nn.ModuleDict(
            {
                field: ModalityProjection(self.features.dim(field), self.hidden_size, config["layer_norm_eps"])
                for field in self.features.fields
            }
        )
        self.fusion = WeightedModalitySum(1 + len(self.features.fields)) if self.features.fields else None

        # multiple attention over single-domain and merged sequences
        self.build_encoders(config)

        # parameters initialization
        self.apply(lambda module: init_weights(module, self.initializer_range))

    def item_representations(self):
        """(item vectors [n_items, H], None): LLMEMF has no tag attention."""
        ids = self.item_embedding.weight  # [n_items, H]
        if self.fusion is None:
            return ids, None
        _, vectors, present = id_and_feature_modalities(ids, self.features, self.projections)
        return self.fusion(torch.stack(vectors, 1), torch.stack(present, 1)), None  # [n_items, H]

    def combine(self, cross, intra):
        return cross + intra  # [..., H]
