"""ABXI: A-B-Cross-to-Invariant learning recommender for cross-domain sequential recommendation.

Reference: Qingtian Bian, Marcus de Carvalho, Tieying Li, Jiaxing Xu, Hui Fang, Yiping Ke.
"ABXI: Invariant Interest Adaptation for Task-Guided Cross-Domain Sequential Recommendation".
WWW 2025 (arXiv 2501.15118); architecture and defaults follow the authors' public code v2.1.

One shared encoder (causal self-attention + SwiGLU feed-forward, post-norm) reads the merged
sequence and one sub-sequence per domain; a domain LoRA (dLoRA) per sequence adapts the shared
feed-forward to it. An invariant projector extracts domain-invariant interests from the merged
representation, and an invariant LoRA (iLoRA) per domain adapts them to that domain. The
prediction for a target of domain d adds the invariant part and the domain-d part.

Task-guided alignment: at every position t the domain-d sub-sequence is non-empty only when the
item that follows position t (the task) belongs to d, and there it holds the latest domain-d item
seen up to t; so each domain representation is read exactly where it is used to predict an item of
its own domain. At inference the next domain is unknown, so the last position is filled for every
domain and each item is scored with the representation of its own domain.

Training (``train_rows``): ``sequence`` is ABXI's: InfoNCE at every position of each user's whole
training sequence, once per epoch (the training loader yields one row per window of
``MAX_ITEM_LIST_LENGTH`` items, recbole_tema/data/training_rows.py). ``prefix`` uses every augmented
row RecBole gives, with the loss at its last position only (the same (history, target) pairs, one
target per row).
Negatives are ``train_neg_per_domain`` items drawn from every domain, once per batch or once per user
sequence (``train_neg_scope``; ABXI draws them per position), excluding the user's training items.

Where we deviate from the authors' code v2.1, and why:
    * negatives (ABXI: 128 + 128 drawn for every position): ``train_neg_scope: batch`` draws them once
      per batch, shared by every position, so the loss is one matrix product; ``sequence`` once per user
      sequence, one batched product, 256 times the distinct negatives a step at 256 users (a draw per
      position would gather a [positions, 256, H] tensor, ~1.5 GB a step on Food-Kitchen);
    * attention masks padding keys (ABXI's queries also see zero-embedded padding);
    * inference is task-guided as training is: at the last position every domain's stream holds its
      latest item and each item is scored with its own domain's state (ABXI's evaluation code places
      domain items at their own timestamps);
    * schedule: the warm-up (``lr_warmup_epochs: 1``) raises the rate linearly over the first epoch's
      steps (ABXI holds that epoch at 1e-5 x lr and does not validate it); no ReduceLROnPlateau (ABXI:
      gamma 0.3162, patience 30); the model is selected on the overall MRR (ABXI: MRR(A) + MRR(B));
    * every linear, the attention input projection too, starts N(0, 0.02) (ABXI keeps PyTorch's
      Xavier init there);
    * evaluation candidates are the protocol's, drawn once with a fixed seed for every model (ABXI
      redraws them unseeded at every evaluation).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_tema.errors import ConfigurationError
from recbole_tema.model.cross_domain import CrossDomainSequentialRecommender

TRAIN_NEG_SCOPES = ("batch", "sequence")  # who shares a draw of training negatives


class LoRA(nn.Module):
    """Low-rank update h -> h A B added beside a shared layer. B starts at zero, so the adapter starts silent;
    rank 0 switches it off: no parameters, a zero update."""

    def __init__(self, dim, rank):
        super().__init__()
        # The 1/50 scale matches the 0.02 std of the other weights (as in the authors' code).
        self.down = nn.Parameter(torch.randn(dim, rank) / 50)
        self.up = nn.Parameter(torch.zeros(rank, dim))

    def forward(self, h):
        return h @ self.down @ self.up  # [..., dim]


class SwiGLU(nn.Module):
    """Feed-forward W3 (silu(W2 h) * W1 h), no biases; the caller adds residual and norm."""

    def __init__(self, dim, inner):
        super().__init__()
        self.fc_value = nn.Linear(dim, inner, bias=False)
        self.fc_gate = nn.Linear(dim, inner, bias=False)
        self.fc_out = nn.Linear(inner, dim, bias=False)

    def forward(self, h):
        return self.fc_out(F.silu(self.fc_gate(h)) * self.fc_value(h))  # [..., dim]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with post-norm residual; a position sees earlier real items and itself."""

    def __init__(self, dim, n_heads, dropout):
        super().__init__()
        if dim % n_heads:
            raise ConfigurationError(f"ABXI: embedding_size [{dim}] must be divisible by n_heads [{n_heads}].")
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h, real, query_steps=None):
        """h: [N, L, H], real: [N, L] bool; query_steps: [N] to attend from one step per sequence only
        (inference reads only the newest position), None for every step. Returns [N, Lq, H]."""
        N, L, H = h.shape
        steps = torch.arange(L, device=h.device)  # [L]
        if query_steps is None:
            queries, at = h, steps.view(1, L, 1).expand(N, L, 1)  # [N, L, H], [N, L, 1]
        else:
            queries, at = h[torch.arange(N, device=h.device), query_steps].unsqueeze(1), query_steps.view(N, 1, 1)
        # Earlier real keys; the query's own step stays open so a padding query never sees an empty row (NaN).
        allowed = (steps.view(1, 1, L) <= at) & (real.unsqueeze(1) | (steps.view(1, 1, L) == at))  # [N, Lq, L]
        w_q, w_kv = self.qkv.weight.split([H, 2 * H])
        b_q, b_kv = self.qkv.bias.split([H, 2 * H])
        q = F.linear(queries, w_q, b_q)  # [N, Lq, H]
        k, v = F.linear(h, w_kv, b_kv).split(H, dim=-1)  # 2 x [N, L, H]
        q, k, v = (x.view(N, -1, self.n_heads, H // self.n_heads).transpose(1, 2) for x in (q, k, v))  # [N, nh, *, hd]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed.unsqueeze(1))  # [N, nh, Lq, hd]
        a = self.out(a.transpose(1, 2).reshape(N, -1, H))  # [N, Lq, H]
        real_q = real.gather(1, at.squeeze(-1))  # [N, Lq]
        return self.norm(queries + self.dropout(a)) * real_q.unsqueeze(-1)  # [N, Lq, H]


class ABXI(CrossDomainSequentialRecommender):
    r"""ABXI (Bian et al., WWW 2025) for two or more domains read from the ``domain`` item field."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["embedding_size"]
        self.n_heads = config["n_heads"]
        self.inner_size = config["inner_size"]
        self.dropout_prob = config["dropout_prob"]
        self.dlora_rank = config["dlora_rank"]
        self.ilora_rank = config["ilora_rank"]
        self.train_neg_scope = config["train_neg_scope"] or "batch"
        if self.train_neg_scope not in TRAIN_NEG_SCOPES:
            raise ConfigurationError(f"ABXI: train_neg_scope [{self.train_neg_scope}] must be one of {list(TRAIN_NEG_SCOPES)}.")
        for key in ("dlora_rank", "ilora_rank"):
            if config[key] < 0:
                raise ConfigurationError(f"ABXI: {key} [{config[key]}] must be >= 0 (0 switches the adapter off).")

        if self.n_domains < 2:
            raise ConfigurationError(
                f"ABXI is a cross-domain model: dataset [{dataset.dataset_name}] has {self.n_domains} "
                f"domain(s) {self.domain_names} in its [{config['DOMAIN_FIELD']}] item field; it needs 2 or more."
            )

        H, D = self.hidden_size, self.n_domains
        self.item_embedding = nn.Embedding(self.n_items, H, padding_idx=0)
        # Positions count back from the newest real item (1) of each sequence; 0 is padding.
        self.position_embedding = nn.Embedding(self.max_seq_length + 1, H, padding_idx=0)
        self.dropout = nn.Dropout(self.dropout_prob)

        # Shared encoder: one attention layer and one feed-forward for every sequence.
        self.attention = CausalSelfAttention(H, self.n_heads, self.dropout_prob)
        self.ffn = SwiGLU(H, self.inner_size)
        # Sequence 0 is the merged one, sequence 1 + d is domain d's.
        self.dlora = nn.ModuleList([LoRA(H, self.dlora_rank) for _ in range(D + 1)])
        self.norm_seq = nn.ModuleList([nn.LayerNorm(H) for _ in range(D + 1)])

        # Invariant projector on the merged representation, adapted to each domain by its iLoRA.
        self.proj_inv = SwiGLU(H, self.inner_size)
        self.ilora = nn.ModuleList([LoRA(H, self.ilora_rank) for _ in range(D)])
        self.norm_inv = nn.ModuleList([nn.LayerNorm(H) for _ in range(D)])
        # Domain projectors on the domain representations.
        self.proj_dom = nn.ModuleList([SwiGLU(H, self.inner_size) for _ in range(D)])
        self.norm_dom = nn.ModuleList([nn.LayerNorm(H) for _ in range(D)])

        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        # As the authors: N(0, 0.02) linears, truncated N(0, 0.02) embeddings; LoRA inits itself.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=0.02, a=-0.04, b=0.04)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ encoder
    def _domain_streams(self, item_seq, task):
        """Task-guided domain sub-sequences.

        item_seq: [B, L] merged sequence (right-padded); task: [B, D, L] bool, task[b, d, t] says the item
        after position t is of domain d. Returns [B, D, L]: at (b, d, t) with task, the latest domain-d
        item up to t (0 if none yet); 0 elsewhere.
        """
        B, L = item_seq.shape
        domains = torch.arange(self.n_domains, device=item_seq.device)  # [D]
        in_domain = self.item_domain[item_seq].unsqueeze(1) == domains.view(1, -1, 1)  # [B, D, L]
        steps = torch.arange(L, device=item_seq.device).view(1, 1, L)  # [1, 1, L]
        latest = torch.where(in_domain, steps, -1).cummax(dim=-1).values  # [B, D, L] index of latest domain-d item
        items = item_seq.unsqueeze(1).expand(B, self.n_domains, L).gather(-1, latest.clamp(min=0))  # [B, D, L]
        return torch.where(task & (latest >= 0), items, 0)  # [B, D, L]

    def _embed(self, seqs):
        # seqs: [N, L]
        real = seqs > 0  # [N, L]
        positions = real.flip(-1).long().cumsum(-1).flip(-1) * real  # [N, L], 1 at the newest real item
        h = (self.item_embedding(seqs) + self.position_embedding(positions)) * real.unsqueeze(-1)  # [N, L, H]
        return self.dropout(h), real

    def _encode(self, item_seq, task, rows, steps, doms, last=None):
        """Representations for the queried (row, step, domain) triples.

        item_seq: [B, L]; task: [B, D, L] bool; rows, steps, doms: [Q] long, the queried positions and the
        domain of the item to predict there. last: [B] when every query of row b is at step last[b] (then
        attention runs from that step only). Returns [Q, H].
        """
        B, L = item_seq.shape
        D = self.n_domains
        streams = self._domain_streams(item_seq, task)  # [B, D, L]
        seqs = torch.cat([item_seq.unsqueeze(1), streams], dim=1).view(B * (D + 1), L)  # [B*(D+1), L]
        h, real = self._embed(seqs)  # [B*(D+1), L, H], [B*(D+1), L]
        query_steps = None if last is None else last.repeat_interleave(D + 1)  # [B*(D+1)]
        h = self.attention(h, real, query_steps).view(B, D + 1, -1, self.hidden_size)  # [B, D+1, Lq, H]
        at = steps if last is None else torch.zeros_like(steps)  # [Q] step index within the queried steps

        h_x = self._adapt(h[rows, 0, at], 0)  # [Q, H] merged sequence, always real at a query
        h_d = h[rows, doms + 1, at]  # [Q, H] the task domain's sequence (zero where it has no item yet)
        has_d = (streams[rows, doms, steps] > 0).unsqueeze(-1)  # [Q, 1]
        h_inv = self.proj_inv(h_x)  # [Q, H]
        out = torch.empty_like(h_x)  # [Q, H]
        for d in range(D):
            sel = doms == d  # [Q]
            if not sel.any():
                continue
            g_x = h_x[sel]  # [Q_d, H]
            g_d = self._adapt(h_d[sel], d + 1) * has_d[sel]  # [Q_d, H]
            invariant = self.norm_inv[d](g_x + self.dropout(h_inv[sel]) + self.dropout(self.ilora[d](g_x)))  # [Q_d, H]
            specific = self.norm_dom[d](g_d + self.dropout(self.proj_dom[d](g_d)))  # [Q_d, H]
            out[sel] = invariant + specific
        return out

    def _adapt(self, h, seq_index):
        """Shared feed-forward plus the sequence's own dLoRA, post-norm."""
        delta = self.dlora[seq_index](h)  # [Q, H]
        return self.norm_seq[seq_index](h + self.dropout(self.ffn(h)) + self.dropout(delta))  # [Q, H]

    def forward(self, item_seq, item_seq_len):
        """Next-item representation for every domain after each sequence: [B, D, H]."""
        B, L = item_seq.shape
        D = self.n_domains
        dev = item_seq.device
        last = (item_seq_len - 1).clamp(min=0)  # [B]
        steps = torch.arange(L, device=dev)  # [L]
        next_domain = torch.cat([self.item_domain[item_seq[:, 1:]], torch.full((B, 1), -1, device=dev)], 1)  # [B, L]
        task = next_domain.unsqueeze(1) == torch.arange(D, device=dev).view(1, -1, 1)  # [B, D, L]
        task |= (steps.view(1, 1, L) == last.view(B, 1, 1))  # the next domain after the last item: every domain
        rows = torch.arange(B, device=dev).repeat_interleave(D)  # [B*D]
        doms = torch.arange(D, device=dev).repeat(B)  # [B*D]
        out = self._encode(item_seq, task, rows, last[rows], doms, last=last)  # [B*D, H]
        return out.view(B, D, -1)  # [B, D, H]

    # ------------------------------------------------------------------ training
    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        pos_items = interaction[self.POS_ITEM_ID]  # [B]
        B, L = item_seq.shape
        D = self.n_domains
        dev = item_seq.device
        targets = self.next_items(interaction)  # [B, L] the item after each position
        target_domain = self.item_domain[targets]  # [B, L], -1 for padding
        task = target_domain.unsqueeze(1) == torch.arange(D, device=dev).view(1, -1, 1)  # [B, D, L]
        scored = self.loss_positions(interaction) & (target_domain >= 0)  # [B, L]
        rows, pos = scored.nonzero(as_tuple=True)  # [Q], [Q]
        doms = target_domain[rows, pos]  # [Q]
        # prefix rows are scored at their last step only: attention runs from that step alone
        one_step = (item_seq_len - 1).clamp(min=0) if self.train_rows == "prefix" else None  # [B] or every step
        h = self._encode(item_seq, task, rows, pos, doms, last=one_step)  # [Q, H]

        seen = torch.cat([item_seq, pos_items.view(B, 1)], 1)  # [B, L+1] the user's training items
        target_emb = self.item_embedding(targets[rows, pos])  # [Q, H]
        pos_logit = (h * target_emb).sum(-1, keepdim=True)  # [Q, 1]
        neg_logit, _ = self.negative_logits(h, rows, pos, seen)  # [Q, M]
        logits = torch.cat([pos_logit, neg_logit], 1) / self.temperature  # [Q, 1+M]
        nll = -F.log_softmax(logits, dim=1)[:, 0]  # [Q]

        # Per domain: mean over each user's positions of that domain, then mean over users (ABXI's loss_a + loss_b).
        loss = h.new_zeros(())
        for d in range(D):
            sel = (doms == d).float()  # [Q]
            per_user = torch.zeros(B, device=dev).index_add_(0, rows, nll * sel)  # [B]
            count = torch.zeros(B, device=dev).index_add_(0, rows, sel)  # [B]
            loss = loss + (per_user / count.clamp(min=1)).mean()
        return loss

    def negative_logits(self, h, rows, pos, seen):
        """Logits of ``train_neg_per_domain`` uniform negatives of every domain, -inf where the user has the item.

        h: [Q, H] states at the (rows, pos) positions of the batch; seen: [B, L'] each sequence's training
        items. Returns the logits [Q, M] and the negatives drawn: [M] shared by the batch, or [B, M] one draw
        per sequence (``train_neg_scope``), M = n_domains * train_neg_per_domain.
        """
        B, L, D = seen.shape[0], int(pos.max()) + 1, self.n_domains
        if self.train_neg_scope == "batch":
            negatives = torch.cat([self.uniform_negatives(d) for d in range(D)])  # [M]
            seen_neg = (seen.unsqueeze(-1) == negatives.view(1, 1, -1)).any(1)  # [B, M]
            logits = h @ self.item_embedding(negatives).t()  # [Q, M]
        else:  # one product per sequence: its positions laid back on a [B, L] grid
            negatives = torch.cat([self.uniform_negatives(d, rows=B) for d in range(D)], 1)  # [B, M]
            seen_neg = (seen.unsqueeze(-1) == negatives.unsqueeze(1)).any(1)  # [B, M]
            grid = h.new_zeros(B, L, h.shape[-1]).index_put((rows, pos), h)  # [B, L, H]
            logits = torch.bmm(grid, self.item_embedding(negatives).transpose(1, 2))[rows, pos]  # [Q, M]
        return logits.masked_fill(seen_neg[rows], float("-inf")), negatives  # [Q, M]

    # ------------------------------------------------------------------ inference
    def predict(self, interaction):
        out = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, D, H]
        return self.score_items(out, self.item_embedding.weight, interaction[self.ITEM_ID])  # [B]

    def full_sort_predict(self, interaction):
        out = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, D, H]
        return self.score_per_domain(out, self.item_embedding.weight)  # [B, n_items]
