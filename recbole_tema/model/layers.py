"""Modules shared by the cross-domain models TEMA and LLMEMF.

Item side: frozen item features held as buffers (:class:`FrozenItemFeatures`), their projections
(:class:`ModalityProjection`), learnable tag tokens pooled per item (:class:`TagFusion`) and a
gated fusion of whatever modalities an item has (:class:`GatedModalityFusion`).

Sequence side: a causal pre-LayerNorm transformer encoder whose queries and keys can carry the
items' tag vectors (:class:`SequenceEncoder`), the compaction of a merged sequence into one
domain's sub-sequence (:func:`domain_subsequence`), and the intra-domain and cross-domain user
states, after every position or after the whole sequence (:class:`MultiDomainAttention`).

A modality is *missing* for an item when its feature row is all zeros (an empty atomic-file cell)
or, for tags, when the item has no tag: it is left out of every softmax that pools modalities or
tags, so it is never mistaken for a feature and never produces NaN.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.utils import FeatureType

from recbole_tema.errors import ConfigurationError

# The frozen float_seq columns of the atomic-file contract, by the YAML switch that enables each.
FEATURE_SWITCHES = {
    "use_text": "text_emb",
    "use_clip_txt": "clip_txt",
    "use_clip_img": "clip_img",
    "use_tag_emb": "tag_emb",
    "use_llm_text": "llm_text_emb",
}


def item_float_seq_fields(dataset):
    """Names of the float_seq item fields the dataset actually loaded."""
    if dataset.item_feat is None:
        return set()
    return {
        field
        for field in dataset.item_feat.columns
        if dataset.field2type.get(field) == FeatureType.FLOAT_SEQ
    }


def enabled_feature_fields(config, dataset):
    """Frozen feature fields that are both switched on in the config and present in the dataset."""
    present = item_float_seq_fields(dataset)
    return [field for switch, field in FEATURE_SWITCHES.items() if config[switch] and field in present]


def init_weights(module, std):
    """Normal(0, std) weights and zero biases, as RecBole's sequential models initialise."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    if isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()


class FrozenItemFeatures(nn.Module):
    """Frozen per-item feature matrices, kept as buffers (moved with the model, never trained).

    ``features[f]`` is ``[n_items, dim_f]`` (row 0 = padding item); ``present[f]`` says which rows
    hold a real vector (not all zeros).
    """

    def __init__(self, dataset, fields):
        super().__init__()
        self.fields = list(fields)
        item_feat = dataset.get_item_feature()
        for field in self.fields:
            values = item_feat[field].float()  # [n_items, dim]
            if not torch.isfinite(values).all():
                bad = int((~torch.isfinite(values)).any(1).nonzero()[0])
                raise ConfigurationError(
                    f"Item field [{field}] of dataset [{dataset.dataset_name}] has a non-finite value "
                    f"for item [{dataset.id2token(dataset.iid_field, bad)}]."
                )
            self.register_buffer(f"feat_{field}", values, persistent=False)
            self.register_buffer(f"present_{field}", values.abs().sum(-1) > 0, persistent=False)  # [n_items]

    def dim(self, field):
        return getattr(self, f"feat_{field}").shape[1]

    def get(self, field):
        """(values [n_items, dim], present [n_items] bool)."""
        return getattr(self, f"feat_{field}"), getattr(self, f"present_{field}")


class ModalityProjection(nn.Module):
    """Maps one frozen modality into the model's hidden space; missing rows stay exactly zero."""

    def __init__(self, in_dim, hidden_size, layer_norm_eps):
        super().__init__()
        self.norm_in = nn.LayerNorm(in_dim, eps=layer_norm_eps)
        self.proj = nn.Linear(in_dim, hidden_size)

    def forward(self, values, present):
        x = self.proj(self.norm_in(values))  # [n_items, hidden]
        return x * present.unsqueeze(-1)  # [n_items, hidden]


def id_and_feature_modalities(ids, features, projections):
    """The item-ID embedding, then every frozen feature of ``features`` through its projection.

    ids: [n_items, H]. Returns lists with one entry per modality, the ID first (always present):
    names [M], vectors M x [n_items, H], present M x [n_items] bool.
    """
    names, vectors, present = ["id"], [ids], [torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)]
    for field in features.fields:
        values, has = features.get(field)  # [n_items, dim], [n_items]
        names.append(field)
        vectors.append(projections[field](values, has))  # [n_items, H]
        present.append(has)
    return names, vectors, present


class TagFusion(nn.Module):
    """Pools an item's learnable tag-token embeddings into one vector.

    ``mode`` ``weighted``: weighted tag fusion with the dataset's ``tag_weights`` (uniform where an
    item has no weights); ``attention``: a learned query scores every tag; ``both``: the learned
    scores plus the log of the given weights (the weights act as a prior of the attention).
    Items without tags get a zero vector and ``present = False``.
    """

    MODES = ("weighted", "attention", "both")

    def __init__(self, tag_ids, tag_weights, num_tags, hidden_size, mode):
        super().__init__()
        if mode not in self.MODES:
            raise ConfigurationError(f"tag_fusion must be one of {self.MODES}, got [{mode}].")
        self.mode = mode
        self.tag_embedding = nn.Embedding(num_tags, hidden_size, padding_idx=0)
        valid = tag_ids > 0  # [n_items, T]
        if tag_weights is None:
            tag_weights = valid.float()  # [n_items, T]
        width = min(tag_ids.shape[1], tag_weights.shape[1])
        weights = torch.zeros_like(valid, dtype=torch.float)  # [n_items, T]
        weights[:, :width] = tag_weights[:, :width].float().clamp(min=0)
        # An item whose weights are missing or all zero falls back to uniform weights over its tags.
        no_weight = (weights * valid).sum(-1, keepdim=True) <= 0  # [n_items, 1]
        weights = torch.where(no_weight, valid.float(), weights) * valid  # [n_items, T]
        self.register_buffer("tag_ids", tag_ids.long(), persistent=False)  # [n_items, T]
        self.register_buffer("valid", valid, persistent=False)  # [n_items, T]
        self.register_buffer("weights", weights, persistent=False)  # [n_items, T]
        self.register_buffer("present", valid.any(-1), persistent=False)  # [n_items]
        if mode != "weighted":
            self.query = nn.Linear(hidden_size, 1, bias=False)

    def forward(self):
        tags, alpha = self.attention()  # [n_items, T, hidden], [n_items, T]
        pooled = (alpha.unsqueeze(-1) * tags).sum(1)  # [n_items, hidden]
        return pooled * self.present.unsqueeze(-1), self.present  # [n_items, hidden], [n_items]

    def attention(self):
        """Every item's tag embeddings [n_items, T, hidden] and pooling weights [n_items, T] (0 on padding)."""
        tags = self.tag_embedding(self.tag_ids)  # [n_items, T, hidden]
        if self.mode == "weighted":
            logits = self.weights.clamp(min=1e-12).log()  # [n_items, T]
        else:
            logits = self.query(tags).squeeze(-1) / math.sqrt(tags.shape[-1])  # [n_items, T]
            if self.mode == "both":
                logits = logits + self.weights.clamp(min=1e-12).log()  # [n_items, T]
        # Rows without any tag would be an all -inf softmax: give them a dummy uniform row, then zero.
        keep = self.valid | ~self.present.unsqueeze(-1)  # [n_items, T]
        return tags, logits.masked_fill(~keep, float("-inf")).softmax(-1)  # [n_items, T, hidden], [n_items, T]


class GatedModalityFusion(nn.Module):
    """Learned gate over an item's present modalities: softmax of a per-modality score, then sum.

    The first modality (the item-ID embedding) is always present, so every softmax has a term.
    """

    def __init__(self, hidden_size, n_modalities):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1, bias=False)
        self.modality_bias = nn.Parameter(torch.zeros(n_modalities))

    def forward(self, modalities, present):
        # modalities: [n_items, M, hidden]; present: [n_items, M]
        alpha = self.shares(modalities, present)  # [n_items, M]
        return (alpha.unsqueeze(-1) * modalities).sum(1)  # [n_items, hidden]

    def shares(self, modalities, present):
        """Each item's weight of each modality [n_items, M] (0 where absent; rows sum to 1)."""
        logits = self.score(torch.tanh(modalities)).squeeze(-1) + self.modality_bias  # [n_items, M]
        return logits.masked_fill(~present, float("-inf")).softmax(-1)  # [n_items, M]


class WeightedModalitySum(nn.Module):
    """ID embedding + sum_m w_m * modality m, with one learned scalar weight per non-ID modality (LLM-EMF's fusion).

    Unlike the gate, every present modality always enters with its full vector, so content reaches
    the item vector however the ID embedding is trained.
    """

    def __init__(self, n_modalities):
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n_modalities - 1))

    def forward(self, modalities, present):
        # modalities: [n_items, M, hidden], the ID embedding first; missing rows are zero, so they add nothing
        return (self.terms(modalities) * present.unsqueeze(-1)).sum(1)  # [n_items, hidden]

    def terms(self, modalities):
        """Each modality's term of the sum: [n_items, M, hidden]."""
        scale = torch.cat([self.weights.new_ones(1), self.weights])  # [M]
        return scale.view(1, -1, 1) * modalities  # [n_items, M, hidden]

    def shares(self, modalities, present):
        """Each modality's share of the item vector [n_items, M]: its term's norm over the sum of norms (rows sum to 1)."""
        norms = self.terms(modalities).norm(dim=-1) * present  # [n_items, M]
        return norms / norms.sum(-1, keepdim=True).clamp(min=1e-12)  # [n_items, M]


class SelfAttention(nn.Module):
    """Causal multi-head self-attention over left-aligned sequences.

    RecBole's item lists are left aligned (real items first, padding after), so a causal mask alone
    keeps every real position away from padding: no padding mask is needed, and the fused
    ``is_causal`` kernel applies. ``qk_extra`` [B, L, 2H] (optional) is added to the queries and
    keys only: TEMA puts projected tag vectors there, so q_i . k_j gains a learned tag-to-tag term.
    """

    def __init__(self, hidden_size, n_heads, attn_dropout_prob, hidden_dropout_prob):
        super().__init__()
        if hidden_size % n_heads:
            raise ConfigurationError(f"hidden_size [{hidden_size}] must be a multiple of n_heads [{n_heads}].")
        self.n_heads = n_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout_prob = attn_dropout_prob
        self.dropout = nn.Dropout(hidden_dropout_prob)

    def forward(self, x, qk_extra=None):
        B, L, H = x.shape
        qkv = self.qkv(x)  # [B, L, 3H]
        if qk_extra is not None:
            qkv = qkv + F.pad(qk_extra, (0, H))  # [B, L, 3H], values untouched
        q, k, v = qkv.split(H, dim=-1)  # 3 x [B, L, H]
        q = q.view(B, L, self.n_heads, -1).transpose(1, 2)  # [B, heads, L, H/heads]
        k = k.view(B, L, self.n_heads, -1).transpose(1, 2)  # [B, heads, L, H/heads]
        v = v.view(B, L, self.n_heads, -1).transpose(1, 2)  # [B, heads, L, H/heads]
        dropout = self.attn_dropout_prob if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # [B, heads, L, H/heads]
        y = y.transpose(1, 2).reshape(B, L, H)  # [B, L, H]
        return self.dropout(self.out(y))  # [B, L, H]


class FeedForward(nn.Module):
    def __init__(self, hidden_size, inner_size, hidden_dropout_prob):
        super().__init__()
        self.up = nn.Linear(hidden_size, inner_size)
        self.down = nn.Linear(inner_size, hidden_size)
        self.dropout = nn.Dropout(hidden_dropout_prob)

    def forward(self, x):
        return self.dropout(self.down(F.gelu(self.up(x))))  # [B, L, H]


class Block(nn.Module):
    """Pre-LayerNorm transformer block; with ``tag_attention``, tags enter its queries and keys."""

    def __init__(self, config, tag_attention):
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.norm_attn = nn.LayerNorm(hidden, eps=eps)
        self.attn = SelfAttention(hidden, config["n_heads"], config["attn_dropout_prob"], config["hidden_dropout_prob"])
        self.norm_ffn = nn.LayerNorm(hidden, eps=eps)
        self.ffn = FeedForward(hidden, config["inner_size"], config["hidden_dropout_prob"])
        self.tag_qk = nn.Linear(hidden, 2 * hidden, bias=False) if tag_attention else None

    def forward(self, x, seq, tag_table=None):
        # x: [B, L, H]; seq: [B, L] item ids; tag_table: [n_items, H]
        qk_extra = None
        if self.tag_qk is not None and tag_table is not None:
            # project the item table, then gather: same result as projecting [B, L, H], far fewer rows
            qk_extra = F.embedding(seq, self.tag_qk(tag_table))  # [B, L, 2H]
        x = x + self.attn(self.norm_attn(x), qk_extra)  # [B, L, H]
        return x + self.ffn(self.norm_ffn(x))  # [B, L, H]


class SequenceEncoder(nn.Module):
    """A left-aligned, zero-padded sequence of item ids -> contextual states, causally."""

    def __init__(self, config, tag_attention=False):
        super().__init__()
        hidden = config["hidden_size"]
        self.position = nn.Embedding(config["MAX_ITEM_LIST_LENGTH"], hidden)
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.blocks = nn.ModuleList(Block(config, tag_attention) for _ in range(config["n_layers"]))
        self.norm_out = nn.LayerNorm(hidden, eps=config["layer_norm_eps"])

    def forward(self, seq, item_table, tag_table=None):
        # seq: [B, L] item ids; item_table: [n_items, H]; tag_table: [n_items, H] (zero rows: no tags)
        positions = torch.arange(seq.shape[1], device=seq.device)  # [L]
        x = self.dropout(F.embedding(seq, item_table) + self.position(positions))  # [B, L, H]
        for block in self.blocks:
            x = block(x, seq, tag_table)  # [B, L, H]
        return self.norm_out(x)  # [B, L, H]


def last_state(states, lengths):
    """State at position ``lengths - 1`` of every row (position 0 for an empty row)."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.shape[-1])  # [B, 1, H]
    return states.gather(1, index).squeeze(1)  # [B, H]


def domain_subsequence(item_seq, seq_domain, domain, max_len=None):
    """Compacts the items of one domain out of merged sequences, keeping their order.

    item_seq, seq_domain: [B, L] (domain -1 at padding). Returns the sub-sequences [B, W] left
    aligned and zero padded (W = longest sub-sequence, at least 1) and their lengths [B]. With
    ``max_len``, only the most recent ``max_len`` items of the domain are kept.
    """
    keep = seq_domain == domain  # [B, L]
    if max_len:
        from_end = keep.sum(1, keepdim=True) - keep.cumsum(1)  # [B, L], 0 at the domain's last item
        keep = keep & (from_end < max_len)  # [B, L]
    lengths = keep.sum(1)  # [B]
    width = max(int(lengths.max()), 1) if lengths.numel() else 1
    # Kept items go to their rank among kept items; the others to a spill column dropped below.
    target = torch.where(keep, keep.cumsum(1) - 1, width)  # [B, L]
    compact = item_seq.new_zeros(item_seq.shape[0], width + 1)  # [B, W + 1]
    compact.scatter_(1, target, item_seq * keep)  # [B, W + 1]
    return compact[:, :width], lengths  # [B, W], [B]


class MultiDomainAttention(nn.Module):
    """Cross-domain states from the merged sequence and intra-domain states from each domain's sub-sequence.

    One :class:`SequenceEncoder` per domain reads that domain's compacted sub-sequence; one reads the
    merged sequence. Two reads of the same encoders:

    * :meth:`at_every_position` (whole-sequence training): the state of every domain after every
      position t, each domain's encoder run once over its whole sub-sequence and its states gathered
      back to the merged positions (the state at t reads that domain's items up to t only);
    * :meth:`at_end`: the states after the whole sequence, only for the (row, domain) pairs asked
      for, the domain's sub-sequence cut to its ``intra_max_len`` most recent items.

    ``tag_table`` (optional, with ``tag_attention``) [n_items, H] holds each item's tag vector.
    """

    def __init__(self, config, n_domains, use_intra, use_cross, tag_attention=False, intra_max_len=None):
        super().__init__()
        self.intra_max_len = intra_max_len
        if not (use_intra or use_cross):
            raise ConfigurationError("At least one of intra_domain_encoder / cross_domain_encoder must be True.")
        self.cross = SequenceEncoder(config, tag_attention) if use_cross else None
        self.intra = (
            nn.ModuleList(SequenceEncoder(config, tag_attention) for _ in range(n_domains)) if use_intra else None
        )

    def at_every_position(self, item_table, item_domain, item_seq, tag_table=None):
        """cross [B, L, H] or None; intra [B, D, L, H] or None; has_intra [B, D, L] or None.

        intra[b, d, t] is domain d's state over its items up to position t; has_intra says there is one.
        """
        cross = intra = has_intra = None
        if self.cross is not None:
            cross = self.cross(item_seq, item_table, tag_table)  # [B, L, H]
        if self.intra is not None:
            seq_domain = item_domain[item_seq]  # [B, L]
            states_per_domain, seen_per_domain = [], []
            for domain, encoder in enumerate(self.intra):
                sub_seq, _ = domain_subsequence(item_seq, seq_domain, domain)  # [B, W]
                states = encoder(sub_seq, item_table, tag_table)  # [B, W, H]
                seen = (seq_domain == domain).cumsum(1)  # [B, L] domain items up to each position
                index = (seen - 1).clamp(min=0).unsqueeze(-1).expand(-1, -1, states.shape[-1])  # [B, L, H]
                states_per_domain.append(states.gather(1, index))  # [B, L, H]
                seen_per_domain.append(seen > 0)  # [B, L]
            intra = torch.stack(states_per_domain, 1)  # [B, D, L, H]
            has_intra = torch.stack(seen_per_domain, 1)  # [B, D, L]
        return cross, intra, has_intra

    def at_end(self, item_table, item_domain, item_seq, seq_len, wanted, tag_table=None):
        """cross [B, H] or None; intra [B, D, H] or None (zeros where not wanted); has_intra [B, D] or None.

        wanted: [B, D] bool, the (row, domain) pairs whose intra state is needed: a domain's encoder
        reads only its rows, so asking for one domain per row costs at most one pass over the batch.
        """
        cross = intra = has_intra = None
        if self.cross is not None:
            cross = last_state(self.cross(item_seq, item_table, tag_table), seq_len)  # [B, H]
        if self.intra is not None:
            seq_domain = item_domain[item_seq]  # [B, L]
            B, D, H = item_seq.shape[0], len(self.intra), item_table.shape[1]
            intra = item_table.new_zeros(B, D, H)  # [B, D, H]
            has_intra = torch.zeros(B, D, dtype=torch.bool, device=item_seq.device)  # [B, D]
            for domain, encoder in enumerate(self.intra):
                rows = wanted[:, domain].nonzero().squeeze(1)  # [B_d]
                if rows.numel() == 0:
                    continue
                sub_seq, sub_len = domain_subsequence(
                    item_seq[rows], seq_domain[rows], domain, self.intra_max_len
                )  # [B_d, W], [B_d]
                states = encoder(sub_seq, item_table, tag_table)  # [B_d, W, H]
                intra = intra.index_put((rows, torch.full_like(rows, domain)), last_state(states, sub_len))  # [B, D, H]
                has_intra = has_intra.index_put((rows, torch.full_like(rows, domain)), sub_len > 0)  # [B, D]
        return cross, intra, has_intra
