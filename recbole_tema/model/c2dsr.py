r"""C2DSR: contrastive cross-domain sequential recommendation, as a RecBole model.

Reference: Jiangxia Cao, Xin Cong, Jiawei Sheng, Tingwen Liu, Bin Wang. "Contrastive Cross-Domain
Sequential Recommendation". CIKM 2022 (arXiv:2304.03891); authors' code: github.com/cjx96/C2DSR.

The method, for a user whose merged timeline mixes items of two domains X and Y:
1. Item graphs from the TRAINING sequences (inter-sequence relations): a cross-domain graph with an
   edge for every consecutive pair of the merged timeline, and a single-domain graph with an edge for
   every consecutive pair of the X-only and of the Y-only sub-sequences. Edge weights are transition
   counts, rows normalised (as the authors' code does).
2. Graph encoders (one per item table): ``h_{k+1} = A h_k + b_k``; the item representation is the
   mean of ``h_0 .. h_K``. The cross graph encodes the merged table, the single graph the X and Y tables.
3. Three causal self-attention encoders (intra-sequence relations): one over the merged sequence and
   one over each domain's sub-sequence, each reading ``(graph(e)[i] + e[i]) * sqrt(d)``.
4. Prediction (in-domain softmax, as the paper's per-domain heads): the next item of domain ``d`` is
   scored by a linear head restricted to domain ``d`` items, once from the merged representation
   (shared objective) and once from merged + domain-``d`` representation (specific objective).
5. Contrastive cross-domain infomax: a bilinear discriminator ``D_X`` tells the X-only user
   representation paired with the merged encoder's features at the Y positions (positive) from the
   same pooled features of a corrupted merged sequence whose X items are replaced by random Y items
   (negative); ``D_Y`` likewise. Loss = ``lambda * prediction + (1 - lambda) * infomax``.

Adaptation to RecBole (stated so results are read correctly):
- Training scheme (``full_sequence_training``, default on, the authors' scheme): each user's training
  timeline (its last training row: the last ``MAX_ITEM_LIST_LENGTH`` items and the target) is one
  sample per epoch, with next-item losses at its last ``loss_positions`` positions; the other prefix
  rows RecBole's augmentation puts in a batch are skipped. Off: RecBole's scheme, every prefix row
  trained at its last position (the same (history, next item) pairs, ~20x more encoder work).
- The specific objective scores the next item of domain d with the exact test-time user: merged
  features at that position + domain-d features at the last domain-d item so far. (The authors pair
  each X position of the X sub-sequence with the next X item.) Their extra "padding" logit, a target
  for masked positions only, is not needed and not used.
- Corrupted sequences are drawn afresh per batch (the authors draw them once when loading data).
- Domain sub-sequences stay aligned with the merged timeline (other-domain positions are padding) and
  are derived from ``item_id_list`` and ``ItemDomains`` on the fly.
- ``full_sort_predict`` scores each item with the user of the item's own domain, so the plugin's
  ranking within the target's domain uses exactly the paper's per-domain head.
- The model is built from the TRAIN split (``model(config, train_data.dataset)``, RecBole's and the
  plugin's convention), so the graphs hold no valid or test interaction.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_tema.data.domains import ItemDomains
from recbole_tema.errors import ConfigurationError


def _row_normalised(src, dst, n_items):
    """Sparse [n_items, n_items] matrix: transition counts src -> dst, each row summing to 1."""
    indices = torch.as_tensor(np.stack([src, dst]), dtype=torch.long)  # [2, E]
    counts = torch.sparse_coo_tensor(indices, torch.ones(len(src)), (n_items, n_items), check_invariants=True).coalesce()
    rows, values = counts.indices(), counts.values()  # [2, E'], [E']
    out_degree = torch.zeros(n_items).index_add_(0, rows[0], values)  # [n_items]
    return torch.sparse_coo_tensor(rows, values / out_degree[rows[0]], (n_items, n_items), check_invariants=True).coalesce()


def _consecutive_pairs(items, users):
    """(src, dst) of consecutive events of the same user; ``items``/``users`` are in timeline order."""
    same_user = users[1:] == users[:-1]  # [E-1]
    return items[:-1][same_user], items[1:][same_user]


def training_timelines(dataset):
    """Every user's training timeline as parallel arrays (items, users), in time order.

    ``dataset`` is the augmented training split of a sequential RecBole dataset: one row per training
    target with its history in ``item_id_list``. Its rows are grouped by user in time order (RecBole
    sorts before augmenting, and the leave-one-out split keeps the order). A user's timeline is the
    first item of its first row's history followed by the row targets, so the graph holds exactly the
    training interactions: no valid or test target ever appears as a training row or in its history.
    """
    inter = dataset.inter_feat
    users = inter[dataset.uid_field].numpy()  # [R]
    order = np.argsort(users, kind="stable")  # keeps each user's rows in their time order
    users = users[order]  # [R]
    targets = inter[dataset.iid_field].numpy()[order]  # [R]
    first_items = inter[dataset.iid_field + dataset.config["LIST_SUFFIX"]].numpy()[order, 0]  # [R]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], dtype=int)
    items = np.insert(targets, starts, first_items[starts])  # [R + U]
    timeline_users = np.insert(users, starts, users[starts])  # [R + U]
    return items, timeline_users


def timeline_ends(dataset):
    """Each user's last training row, which holds its whole (truncated) training timeline.

    Returns its history [n_users, L], history length [n_users] and target [n_users] (zeros for users
    without a training row). Rows are matched on their content, not on time: RecBole normalises
    timestamps into float32, where neighbouring times tie.
    """
    inter = dataset.inter_feat
    users = inter[dataset.uid_field].numpy()  # [R]
    # Rows are in time order within a user: the last row of each user is the end of its timeline.
    last_row = np.full(dataset.user_num, -1, dtype=np.int64)  # [n_users]
    np.maximum.at(last_row, users, np.arange(len(users)))
    has_row = torch.as_tensor(last_row >= 0)  # [n_users]
    last_row = torch.as_tensor(last_row).clamp(min=0)  # [n_users]
    history = inter[dataset.iid_field + dataset.config["LIST_SUFFIX"]][last_row] * has_row.unsqueeze(1)  # [n_users, L]
    length = inter[dataset.config["ITEM_LIST_LENGTH_FIELD"]][last_row] * has_row  # [n_users]
    target = inter[dataset.iid_field][last_row] * has_row  # [n_users]
    return history, length, target


def transition_graphs(dataset, item_domain):
    """(cross, single): row-normalised sparse item-item transition graphs from the training split.

    cross: consecutive items of the merged timeline; single: consecutive items of each domain's
    sub-sequence (both domains in one matrix, as the authors' ``adj_single``).
    """
    n_items = item_domain.numel()
    items, users = training_timelines(dataset)
    cross = _row_normalised(*_consecutive_pairs(items, users), n_items)
    domains = item_domain.numpy()[items]  # [E]
    src, dst = [], []
    for d in range(int(item_domain.max()) + 1):
        in_d = domains == d
        s, t = _consecutive_pairs(items[in_d], users[in_d])
        src.append(s)
        dst.append(t)
    single = _row_normalised(np.concatenate(src), np.concatenate(dst), n_items)
    return cross, single


class GraphEncoder(nn.Module):
    """Propagation over a fixed item graph; the output is the mean of all layers' item vectors."""

    def __init__(self, hidden_size, n_layers, dropout):
        super().__init__()
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(hidden_size)) for _ in range(n_layers)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, table, graph):
        layers = [table]  # each [n_items, H]
        h = table  # [n_items, H]
        for bias in self.biases:
            h = torch.sparse.mm(graph, self.dropout(h)) + bias  # [n_items, H]
            layers.append(h)
        return torch.stack(layers).mean(0)  # [n_items, H]


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden_size, n_heads, dropout):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key_value = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def forward(self, queries, keys, allowed):
        B, L, H = queries.shape
        q = self.query(queries).view(B, L, self.n_heads, -1).transpose(1, 2)  # [B, nh, L, H/nh]
        k, v = self.key_value(keys).split(H, dim=2)  # [B, L, H] each
        k = k.view(B, L, self.n_heads, -1).transpose(1, 2)  # [B, nh, L, H/nh]
        v = v.view(B, L, self.n_heads, -1).transpose(1, 2)  # [B, nh, L, H/nh]
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)  # [B, nh, L, H/nh]
        return self.proj(y.transpose(1, 2).reshape(B, L, H))  # [B, L, H]


class Block(nn.Module):
    """SASRec block as in the authors' encoder: queries are layer-normed, keys/values are not."""

    def __init__(self, hidden_size, n_heads, dropout):
        super().__init__()
        self.ln_attn = nn.LayerNorm(hidden_size, eps=1e-8)
        self.attn = CausalSelfAttention(hidden_size, n_heads, dropout)
        self.ln_ffn = nn.LayerNorm(hidden_size, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.Dropout(dropout),
        )

    def forward(self, x, allowed, keep):
        q = self.ln_attn(x)  # [B, L, H]
        x = q + self.attn(q, x, allowed)  # [B, L, H]
        h = self.ln_ffn(x)  # [B, L, H]
        return (h + self.ffn(h)) * keep  # [B, L, H]


class SequenceEncoder(nn.Module):
    """Causal self-attention over a (sub-)sequence; padding positions give zero-masked outputs."""

    def __init__(self, max_len, hidden_size, n_layers, n_heads, dropout):
        super().__init__()
        self.position = nn.Embedding(max_len + 1, hidden_size, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(hidden_size, n_heads, dropout) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(hidden_size, eps=1e-8)

    def forward(self, x, present):
        """x [B, L, H] item inputs, present [B, L] bool (a real item at this position)."""
        L = x.size(1)
        positions = present.long().cumsum(1) * present  # [B, L] 1.. within this sequence, 0 on padding
        keep = present.unsqueeze(-1).float()  # [B, L, 1]
        x = self.dropout(x + self.position(positions)) * keep  # [B, L, H]
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=x.device))  # [L, L]
        # A position sees earlier real items and always itself, so no row is fully masked (no NaN).
        allowed = (causal & present.unsqueeze(1)) | torch.eye(L, dtype=torch.bool, device=x.device)  # [B, L, L]
        allowed = allowed.unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, allowed, keep)  # [B, L, H]
        return self.ln_f(x)  # [B, L, H]


class Discriminator(nn.Module):
    """Bilinear critic of (cross-domain features, single-domain user representation) pairs."""

    def __init__(self, hidden_size):
        super().__init__()
        self.bilinear = nn.Bilinear(hidden_size, hidden_size, 1)
        nn.init.xavier_uniform_(self.bilinear.weight)
        nn.init.zeros_(self.bilinear.bias)

    def forward(self, cross, single):
        return self.bilinear(cross, single).squeeze(-1)  # [B]


class C2DSR(SequentialRecommender):
    """C2DSR (Cao et al., CIKM 2022) on a two-domain RecBole dataset (item field ``domain``)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.gnn_layers = config["gnn_layers"]
        self.dropout_prob = config["dropout_prob"]
        self.loss_lambda = config["loss_lambda"]
        self.full_sequence_training = config["full_sequence_training"]
        self.loss_positions = config["loss_positions"]
        if self.hidden_size % self.n_heads:
            raise ConfigurationError(f"C2DSR: hidden_size [{self.hidden_size}] must be divisible by n_heads [{self.n_heads}].")
        if not 0.0 <= self.loss_lambda <= 1.0:
            raise ConfigurationError(f"C2DSR: loss_lambda [{self.loss_lambda}] must lie in [0, 1].")
        if self.loss_positions < 1:
            raise ConfigurationError(f"C2DSR: loss_positions [{self.loss_positions}] must be at least 1.")

        domains = ItemDomains.from_dataset(dataset)
        if domains.num_domains != 2:
            raise ConfigurationError(
                f"C2DSR models exactly two domains (its infomax pairs domain X with domain Y), but dataset "
                f"[{dataset.dataset_name}] has {domains.num_domains} in item field [{domains.field}]: {domains.names}."
            )
        self.register_buffer("item_domain", domains.item_domain.clone(), persistent=False)  # [n_items]
        # Items of each domain (their head rows, and the pool corrupted sequences draw from), and each
        # item's index inside its own domain (its class in the in-domain softmax).
        domain_items = [torch.nonzero(mask).squeeze(1) for mask in domains.masks]
        if min(len(items) for items in domain_items) == 0:
            raise ConfigurationError(f"C2DSR: a domain of [{dataset.dataset_name}] has no item: {domains.names}.")
        for d, items in enumerate(domain_items):
            self.register_buffer(f"domain_items_{d}", items, persistent=False)  # [n_d]
        rank_in_domain = torch.zeros(self.n_items, dtype=torch.long)  # [n_items]
        for items in domain_items:
            rank_in_domain[items] = torch.arange(len(items))
        self.register_buffer("rank_in_domain", rank_in_domain, persistent=False)

        # The graphs are a function of the training split, rebuilt identically from it on reload.
        cross_graph, single_graph = transition_graphs(dataset, domains.item_domain)
        self.register_buffer("cross_graph", cross_graph, persistent=False)  # sparse [n_items, n_items]
        self.register_buffer("single_graph", single_graph, persistent=False)  # sparse [n_items, n_items]
        if self.full_sequence_training:
            end_history, end_length, end_item = timeline_ends(dataset)
            self.register_buffer("end_history", end_history, persistent=False)  # [n_users, L]
            self.register_buffer("end_length", end_length, persistent=False)  # [n_users]
            self.register_buffer("end_item", end_item, persistent=False)  # [n_users]

        H = self.hidden_size
        self.item_embedding = nn.Embedding(self.n_items, H, padding_idx=0)
        self.domain_item_embeddings = nn.ModuleList([nn.Embedding(self.n_items, H, padding_idx=0) for _ in range(2)])
        self.cross_gnn = GraphEncoder(H, self.gnn_layers, self.dropout_prob)
        self.domain_gnns = nn.ModuleList([GraphEncoder(H, self.gnn_layers, self.dropout_prob) for _ in range(2)])
        encoder_args = (self.max_seq_length, H, self.n_layers, self.n_heads, self.dropout_prob)
        self.cross_encoder = SequenceEncoder(*encoder_args)
        self.domain_encoders = nn.ModuleList([SequenceEncoder(*encoder_args) for _ in range(2)])
        self.discriminators = nn.ModuleList([Discriminator(H) for _ in range(2)])
        # One row per item; domain d's head is the rows of domain d's items (in-domain softmax).
        self.head = nn.Linear(H, self.n_items)

    def _domain_items(self, d):
        return getattr(self, f"domain_items_{d}")  # [n_d]

    # ------------------------------------------------------------------ encoders
    def _item_tables(self):
        """Graph-encoded tables: merged [n_items, H] and per-domain list of [n_items, H]."""
        cross = self.cross_gnn(self.item_embedding.weight, self.cross_graph)  # [n_items, H]
        single = [
            gnn(emb.weight, self.single_graph) for gnn, emb in zip(self.domain_gnns, self.domain_item_embeddings)
        ]  # 2 x [n_items, H]
        return cross, single

    def _inputs(self, graph_table, embedding, item_seq):
        return (graph_table[item_seq] + embedding(item_seq)) * math.sqrt(self.hidden_size)  # [B, L, H]

    def _encode(self, item_seq, tables):
        """Merged features [B, L, H], per-domain features 2 x [B, L, H], and the domain of each position [B, L]."""
        cross, single = tables
        seq_domain = self.item_domain[item_seq]  # [B, L], -1 on padding
        merged = self.cross_encoder(self._inputs(cross, self.item_embedding, item_seq), item_seq > 0)  # [B, L, H]
        per_domain = []
        for d in range(2):
            in_d = seq_domain == d  # [B, L]
            sub_seq = item_seq * in_d  # [B, L] domain-d items in place, padding elsewhere
            x = self._inputs(single[d], self.domain_item_embeddings[d], sub_seq)  # [B, L, H]
            per_domain.append(self.domain_encoders[d](x, in_d))  # [B, L, H]
        return merged, per_domain, seq_domain

    @staticmethod
    def _users(merged, per_domain, seq_domain):
        """[2, B, L, H]: at each position p, merged[p] + domain d's features at its last item up to p
        (zeros while the user has no domain-d item yet): the user that scores domain-d items."""
        B, L = seq_domain.shape
        rows = torch.arange(B, device=seq_domain.device).unsqueeze(1)  # [B, 1]
        users = []
        for d in range(2):
            ranked = torch.arange(1, L + 1, device=seq_domain.device) * (seq_domain == d)  # [B, L]
            last = ranked.cummax(1).values  # [B, L] 1 + index of the last domain-d item so far, 0 if none
            found = (last > 0).unsqueeze(-1)  # [B, L, 1]
            users.append(merged + per_domain[d][rows, (last - 1).clamp(min=0)] * found)  # [B, L, H]
        return torch.stack(users)  # [2, B, L, H]

    def forward(self, item_seq, item_seq_len):
        """User representations at the last position: merged [B, H] and per target domain [2, B, H]."""
        merged, per_domain, seq_domain = self._encode(item_seq, self._item_tables())
        rows = torch.arange(len(item_seq), device=item_seq.device)  # [B]
        users = self._users(merged, per_domain, seq_domain)  # [2, B, L, H]
        return merged[rows, item_seq_len - 1], users[:, rows, item_seq_len - 1]  # [B, H], [2, B, H]

    # --------------------------------------------------------------------- losses
    def _in_domain_ce(self, users, targets):
        """Mean cross-entropy of users [P, H] over the items of each target's own domain (targets [P])."""
        target_domain = self.item_domain[targets]  # [P]
        total = users.new_zeros(())
        for d in range(2):
            rows = target_domain == d  # [P]
            items = self._domain_items(d)  # [n_d]
            logits = users[rows] @ self.head.weight[items].T + self.head.bias[items]  # [P_d, n_d]
            total = total + F.cross_entropy(logits, self.rank_in_domain[targets[rows]], reduction="sum")
        return total / len(targets)

    def _corrupt(self, item_seq, seq_domain, keep_domain):
        """Items of ``keep_domain`` stay; the other domain's items become random ``keep_domain`` items."""
        pool = self._domain_items(keep_domain)  # [n_d]
        random_items = pool[torch.randint(len(pool), item_seq.shape, device=item_seq.device)]  # [B, L]
        replace = (seq_domain >= 0) & (seq_domain != keep_domain)  # [B, L]
        return torch.where(replace, random_items, item_seq)  # [B, L]

    def _infomax(self, item_seq, merged, per_domain, seq_domain, tables):
        """Sum over the two discriminators of BCE(real) + BCE(corrupted), over users with both domains."""
        both = ((seq_domain == 0).any(1)) & ((seq_domain == 1).any(1))  # [B]
        if not both.any():
            return merged.new_zeros(())
        item_seq, merged, seq_domain = item_seq[both], merged[both], seq_domain[both]  # [B', L], [B', L, H], [B', L]
        masks = [(seq_domain == d).unsqueeze(-1).float() for d in range(2)]  # 2 x [B', L, 1]

        def pool(feats, d):  # mean of [B', L, H] features over domain-d positions -> [B', H]
            return (feats * masks[d]).sum(1) / masks[d].sum(1)

        # Sequence whose domain-d items are random other-domain items, for d = 0, 1, in one encoder pass.
        corrupted_seq = torch.cat([self._corrupt(item_seq, seq_domain, 1 - d) for d in range(2)])  # [2B', L]
        inputs = self._inputs(tables[0], self.item_embedding, corrupted_seq)  # [2B', L, H]
        corrupted = self.cross_encoder(inputs, corrupted_seq > 0).chunk(2)  # 2 x [B', L, H]
        loss = merged.new_zeros(())
        for d in range(2):
            single_user = pool(per_domain[d][both], d)  # [B', H] domain-d-only user
            real = self.discriminators[d](pool(merged, 1 - d), single_user)  # [B'] real cross-domain features
            fake = self.discriminators[d](pool(corrupted[d], 1 - d), single_user)  # [B'] domain d wiped out
            loss = loss + F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            loss = loss + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        return loss

    def _timeline_rows(self, interaction):
        """[B] bool: rows whose target is the last item of its user's training timeline."""
        users = interaction[self.USER_ID]  # [B]
        same_history = (interaction[self.ITEM_SEQ] == self.end_history[users]).all(1)  # [B]
        same_length = interaction[self.ITEM_SEQ_LEN] == self.end_length[users]  # [B]
        return same_history & same_length & (interaction[self.POS_ITEM_ID] == self.end_item[users])

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        target = interaction[self.POS_ITEM_ID]  # [B]
        if self.full_sequence_training:
            keep = self._timeline_rows(interaction)  # [B]
            if not keep.any():
                # No timeline ends in this batch: a zero loss that still backpropagates.
                return self.head.bias.sum() * 0.0
            item_seq, item_seq_len, target = item_seq[keep], item_seq_len[keep], target[keep]
        if (self.item_domain[target] < 0).any():
            raise ValueError("C2DSR: a training target has no domain (empty `domain` cell in the .item file).")
        tables = self._item_tables()
        merged, per_domain, seq_domain = self._encode(item_seq, tables)
        users = self._users(merged, per_domain, seq_domain)  # [2, B, L, H]
        B, L = item_seq.shape
        rows = torch.arange(B, device=item_seq.device)  # [B]
        if self.full_sequence_training:
            # Every position p predicts the next item of the timeline (the target after the last one).
            next_items = torch.cat([item_seq[:, 1:], item_seq.new_zeros(B, 1)], 1)  # [B, L]
            next_items[rows, item_seq_len - 1] = target
            positions = torch.arange(L, device=item_seq.device)  # [L]
            scored = (positions < item_seq_len.unsqueeze(1)) & (
                positions >= item_seq_len.unsqueeze(1) - self.loss_positions
            )  # [B, L]
            b, p = scored.nonzero(as_tuple=True)  # [P], [P]
        else:
            b, p, next_items = rows, item_seq_len - 1, target.unsqueeze(1)  # RecBole's last-position target
            next_items = next_items.expand(B, L)  # [B, L], read only at p
        targets = next_items[b, p]  # [P]
        shared = self._in_domain_ce(merged[b, p], targets)
        specific = self._in_domain_ce(users[self.item_domain[targets], b, p], targets)
        infomax = self._infomax(item_seq, merged, per_domain, seq_domain, tables)
        return self.loss_lambda * (shared + specific) + (1.0 - self.loss_lambda) * infomax

    # ---------------------------------------------------------------- prediction
    def predict(self, interaction):
        item = interaction[self.ITEM_ID]  # [B]
        _, users = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [2, B, H]
        user = users[self.item_domain[item].clamp(min=0), torch.arange(len(item), device=item.device)]  # [B, H]
        return (user * self.head.weight[item]).sum(-1) + self.head.bias[item]  # [B]

    def full_sort_predict(self, interaction):
        _, users = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [2, B, H]
        scores = users.new_full((users.size(1), self.n_items), float("-inf"))  # [B, n_items]; padding id stays -inf
        for d in range(2):
            items = self._domain_items(d)  # [n_d]
            scores[:, items] = users[d] @ self.head.weight[items].T + self.head.bias[items]  # [B, n_d]
        return scores
