r"""
LLM4CDSR
################################################

Reference:
    Qidong Liu et al. "Bridge the Domains: Large Language Models Enhanced Cross-domain Sequential
    Recommendation." SIGIR 2025. arXiv:2504.18383. Written from the paper and the authors' public
    code (Applied-Machine-Learning-Lab/LLM4CDSR-pytorch: models/LLMCDSR.py, the Amazon script
    experiments/amazon/llm4cdsr.bash), not copied from it.

What it does:
    * global thread: a SASRec-style causal encoder over the merged cross-domain sequence; every item
      is its frozen LLM embedding ``llm_emb`` (one space for all items) passed through a trainable
      two-layer adapter, the same vector as input and as output item;
    * one domain thread per domain: a causal encoder over that domain's sub-sequence, on the frozen
      per-domain embedding ``llm_emb_domain`` (PCA within the domain), again as input and output;
    * score of an item: its global score plus the score of its own domain's thread. Here the user
      state for domain d is the concatenation [global state | domain-d state] and the item table the
      concatenation [adapted llm_emb | llm_emb_domain], so one dot product gives the sum and the
      shared in-domain loss and scoring of :class:`MultiAttentionRecommender` apply unchanged;
    * adapter regularization (weight ``beta``, temperature ``tau_reg``): for each training row one
      random item of each domain, and a contrastive loss that pulls the adapted vectors of a user's
      items of two domains together (pairs of other rows are the negatives);
    * LLM user profile (weight ``alpha``, temperature ``tau``): the frozen embedding ``profile_emb``
      of the user's LLM-written profile (``.user`` file) through a two-layer user adapter, aligned by
      the same contrastive loss with the global state after the row's last item (one pair per
      training row: a user whose sequence spans several windows gives one per window).
    Both contrastive terms are the authors' symmetric loss with soft targets: logits x_i . y_j / tau,
    target row i the softmax of (x_i . x_j + y_i . y_j) / (2 tau), cross-entropy both ways, averaged.

Columns read (docs/atomic_files.md): ``.item`` ``llm_emb`` (required) and ``llm_emb_domain``; ``.user``
``profile_emb``. An all-zero row is a missing embedding: that item's adapted vector is zero, that user
has no profile term. Nothing else of the data is read, so no validation or test item reaches the model
(the profile is built by the data side from training interactions).

Where we deviate from the paper / the authors' code, and why:
    * training loss: the plugin's in-domain softmax (each target against every item of its domain),
      at every position of each user's training sequence (``train_rows: sequence``), mean over the
      targets; the authors use binary cross-entropy with one random negative per position and sum the
      per-domain means. As TEMA and ABXI here, so that every plugin model is trained on the same rows.
    * a target that is its domain's first item in the sequence is trained too: its domain thread has
      read nothing yet and gives a learned stand-in state (``empty_intra``), the one also used to
      score a domain the user has no history in. The authors drop those targets from the loss.
    * scoring reads no label: every item is scored with the global state and the state of the item's
      own domain (the authors add the thread of the target's domain, read from the test label).
    * attention is causal; the authors' code leaves the causal mask commented out, so in training a
      position also attends to the items after it, its own target among them.
    * encoder: the plugin's pre-LayerNorm block (GELU feed-forward of ``inner_size``, learned
      positions, final LayerNorm) without the authors' input scaling by sqrt(embedding size);
      weights start N(0, ``initializer_range``) (the authors: Xavier normal).
    * more than two domains: one domain thread per domain, and the adapter regularization averaged
      over every pair of domains a row has items of (the authors' code has two domains, one pair).
    * contrastive loss: the soft targets are divided by ``tau`` (the authors multiply them by it; the
      same at their tau = 1) and both directions use the row-normalized targets (the authors' second
      direction uses the transposed matrix, whose rows do not sum to one).
    * the authors' code multiplies the adapter term by ``alpha`` and the profile term by ``beta``,
      while its argument help says the reverse; here ``alpha`` weights the profile term and ``beta``
      the adapter regularization. Both are 0.1 in the authors' scripts, so the results agree.
    * without ``llm_emb_domain`` (or with ``domain_llm_emb: False``) the domain threads read learnable
      item-ID embeddings of ``hidden_size``, as the authors' code without ``--local_emb``; a warning
      says so. Without a ``.user`` ``profile_emb`` column the profile term is off, with a warning.
"""

from logging import getLogger

import torch
import torch.nn as nn
from recbole.utils import FeatureType

from recbole_tema.errors import ConfigurationError
from recbole_tema.model.layers import (
    FrozenItemFeatures,
    MultiDomainAttention,
    SequenceEncoder,
    init_weights,
    item_float_seq_fields,
    last_state,
)
from recbole_tema.model.multi_attention import MultiAttentionRecommender

LLM_EMB = "llm_emb"  # .item: the item's LLM embedding, one space for all items
LLM_EMB_DOMAIN = "llm_emb_domain"  # .item: the same embedding reduced within the item's domain
PROFILE_EMB = "profile_emb"  # .user: the embedding of the user's LLM profile
ENCODER_KEYS = ("hidden_size", "inner_size", "n_layers", "n_heads", "hidden_dropout_prob", "attn_dropout_prob",
                "layer_norm_eps", "MAX_ITEM_LIST_LENGTH")


def soft_contrastive_loss(x, y, tau):
    """Symmetric contrastive loss of paired rows x [N, H], y [N, H] with soft targets; 0 for N = 0.

    Row i of x should score y_i above the other rows of y, softened by how alike the rows are:
    the target of row i is the softmax of (x_i . x_j + y_i . y_j) / (2 tau) over j.
    """
    if len(x) == 0:
        return x.new_zeros(())
    logits = x @ y.t() / tau  # [N, N]
    # [N, N] row i: the targets of x_i and of y_i alike (the similarities are symmetric in i and j)
    targets = ((x @ x.t() + y @ y.t()) / (2 * tau)).softmax(-1)  # [N, N]
    x_to_y = -(targets * logits.log_softmax(-1)).sum(-1)  # [N]
    y_to_x = -(targets * logits.t().log_softmax(-1)).sum(-1)  # [N]
    return ((x_to_y + y_to_x) / 2).mean()


def adapter(in_dim, out_dim):
    """The authors' two linear layers, no activation between them: in_dim -> in_dim / 2 -> out_dim."""
    mid = max(in_dim // 2, 1)
    return nn.Sequential(nn.Linear(in_dim, mid), nn.Linear(mid, out_dim))


class GlobalAndDomainThreads(nn.Module):
    """The global thread and the domain threads behind :class:`MultiDomainAttention`'s interface.

    The item table's first ``hidden_size`` columns feed the global thread, the others the domain
    threads; the global state comes back as ``cross``, the domain states as ``intra``.
    """

    def __init__(self, config, domain_width, n_domains, intra_max_len):
        super().__init__()
        self.width = config["hidden_size"]
        self.global_thread = SequenceEncoder(config)
        domain_config = {key: config[key] for key in ENCODER_KEYS}
        domain_config["hidden_size"] = domain_width
        self.domain_threads = MultiDomainAttention(
            domain_config, n_domains, use_intra=True, use_cross=False, intra_max_len=intra_max_len
        )

    def at_every_position(self, item_table, item_domain, item_seq, tag_table=None):
        """global [B, L, H]; domain states [B, D, L, Hd]; has_intra [B, D, L] (see MultiDomainAttention)."""
        cross = self.global_thread(item_seq, item_table[:, : self.width])  # [B, L, H]
        _, intra, has_intra = self.domain_threads.at_every_position(
            item_table[:, self.width :], item_domain, item_seq
        )  # [B, D, L, Hd], [B, D, L]
        return cross, intra, has_intra

    def at_end(self, item_table, item_domain, item_seq, seq_len, wanted, tag_table=None):
        """global [B, H]; domain states [B, D, Hd] (zeros where not wanted); has_intra [B, D]."""
        cross = last_state(self.global_thread(item_seq, item_table[:, : self.width]), seq_len)  # [B, H]
        _, intra, has_intra = self.domain_threads.at_end(
            item_table[:, self.width :], item_domain, item_seq, seq_len, wanted
        )  # [B, D, Hd], [B, D]
        return cross, intra, has_intra


class LLM4CDSR(MultiAttentionRecommender):
    r"""LLM4CDSR scores an item with a global thread over the merged sequence on adapted frozen LLM
    item embeddings plus its domain's thread on frozen per-domain LLM embeddings, regularizes the
    adapter across domains and aligns the user state with the user's LLM profile.
    """

    user_feature_fields = (PROFILE_EMB,)  # the .user columns Config loads for this model

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.n_heads = config["n_heads"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        self.alpha = config["alpha"]
        self.beta = config["beta"]
        self.tau = config["tau"]
        self.tau_reg = config["tau_reg"]
        domain_llm_emb = config["domain_llm_emb"]
        # prefix rows cut each domain's sub-sequence to its intra_max_len latest items; windows keep all
        intra_max_len = config["intra_max_len"] if self.train_rows == "prefix" else None
        if self.loss_type != "CE":
            raise ConfigurationError(f"LLM4CDSR trains with loss_type CE only, got [{self.loss_type}].")
        if self.n_domains < 2:
            raise ConfigurationError(
                f"LLM4CDSR is a cross-domain model: dataset [{dataset.dataset_name}] has {self.n_domains} "
                f"domain(s) {self.domain_names} in its [{config['DOMAIN_FIELD']}] item field; it needs 2 or more."
            )
        for key in ("alpha", "beta"):
            if config[key] < 0:
                raise ConfigurationError(f"LLM4CDSR: {key} [{config[key]}] must be >= 0 (0 switches its term off).")
        for key in ("tau", "tau_reg"):
            if not config[key] > 0:
                raise ConfigurationError(f"LLM4CDSR: {key} [{config[key]}] must be > 0.")

        # item side: frozen LLM embeddings; the global thread's items through the adapter
        item_fields = item_float_seq_fields(dataset)
        if LLM_EMB not in item_fields:
            raise ConfigurationError(
                f"LLM4CDSR needs the item column [{LLM_EMB}] (float_seq, each item's LLM embedding) in "
                f"{dataset.dataset_name}.item, which has none: build it with the {LLM_EMB} stage of "
                f"atomic_data_builders (`python -m atomic_data_builders ... --stages {LLM_EMB}`)."
            )
        use_domain_emb = domain_llm_emb and LLM_EMB_DOMAIN in item_fields
        self.features = FrozenItemFeatures(dataset, [LLM_EMB, LLM_EMB_DOMAIN] if use_domain_emb else [LLM_EMB])
        self.adapter = adapter(self.features.dim(LLM_EMB), self.hidden_size)
        if use_domain_emb:
            self.domain_item_embedding = None
            domain_width = self.features.dim(LLM_EMB_DOMAIN)
        else:
            self.domain_item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
            domain_width = self.hidden_size
            if domain_llm_emb:
                getLogger().warning(
                    f"LLM4CDSR: {dataset.dataset_name}.item has no [{LLM_EMB_DOMAIN}] column: the domain threads "
                    f"read learnable item-ID embeddings instead (build it with the {LLM_EMB} stage of "
                    "atomic_data_builders)."
                )
        if domain_width % self.n_heads:
            raise ConfigurationError(
                f"LLM4CDSR: the domain threads run at the width of their item vectors [{domain_width}], "
                f"which n_heads [{self.n_heads}] must divide."
            )

        # sequence side: the global thread and one thread per domain
        self.encoders = GlobalAndDomainThreads(config, domain_width, self.n_domains, intra_max_len)
        self.empty_intra = nn.Parameter(torch.zeros(self.n_domains, domain_width))

        # user side: the frozen LLM profile embedding through the user adapter
        self.user_adapter = self._build_profile(dataset) if self.alpha > 0 else None

        # parameters initialization
        self.apply(lambda module: init_weights(module, self.initializer_range))

    def _build_profile(self, dataset):
        """The user adapter, with the profiles as buffers; None (and a warning) without ``profile_emb``."""
        loaded = dataset.user_feat is not None and PROFILE_EMB in dataset.user_feat
        if not loaded or dataset.field2type[PROFILE_EMB] != FeatureType.FLOAT_SEQ:
            getLogger().warning(
                f"LLM4CDSR: no [{PROFILE_EMB}] column in a {dataset.dataset_name}.user file (the user_profile "
                "stage of atomic_data_builders writes it): the user-profile term is off (alpha is ignored)."
            )
            return None
        profiles = dataset.get_user_feature()[PROFILE_EMB].float()  # [n_users, P]
        if not torch.isfinite(profiles).all():
            bad = int((~torch.isfinite(profiles)).any(1).nonzero()[0])
            raise ConfigurationError(
                f"User field [{PROFILE_EMB}] of dataset [{dataset.dataset_name}] has a non-finite value "
                f"for user [{dataset.id2token(dataset.uid_field, bad)}]."
            )
        self.register_buffer("profiles", profiles, persistent=False)  # [n_users, P]
        self.register_buffer("has_profile", profiles.abs().sum(-1) > 0, persistent=False)  # [n_users]
        return adapter(profiles.shape[1], self.hidden_size)

    # ------------------------------------------------------------------ items and states
    def item_representations(self):
        """([adapted llm_emb | domain-thread item vector] of every item [n_items, H + Hd], None: no tags)."""
        values, present = self.features.get(LLM_EMB)  # [n_items, d], [n_items]
        global_items = self.adapter(values) * present.unsqueeze(-1)  # [n_items, H] missing rows stay zero
        if self.domain_item_embedding is None:
            domain_items = self.features.get(LLM_EMB_DOMAIN)[0]  # [n_items, Hd] frozen
        else:
            domain_items = self.domain_item_embedding.weight  # [n_items, H]
        return torch.cat([global_items, domain_items], 1), None  # [n_items, H + Hd]

    def combine(self, cross, intra):
        # score = global state . global item + domain state . domain item
        return torch.cat([cross, intra], -1)  # [..., H + Hd]

    # ------------------------------------------------------------------ training
    def calculate_loss(self, interaction):
        item_table, _ = self.item_representations()  # [n_items, H + Hd]
        states, targets, has_target = self.target_states(interaction, item_table, None)  # [Q, H + Hd], [Q], [B, L]
        nll = self.in_domain_nll(states, targets, item_table)  # [Q]
        loss = nll.sum() / max(len(nll), 1)
        if self.beta > 0:
            loss = loss + self.beta * self.adapter_loss(interaction[self.ITEM_SEQ], item_table[:, : self.hidden_size])
        if self.user_adapter is not None:
            rows, steps = has_target.nonzero(as_tuple=True)  # [Q], [Q]
            last = steps == interaction[self.ITEM_SEQ_LEN][rows] - 1  # [Q] the state after each row's last item
            users = interaction[self.USER_ID][rows[last]]  # [B]
            loss = loss + self.alpha * self.profile_loss(users, states[last, : self.hidden_size])
        return loss

    def adapter_loss(self, item_seq, global_items):
        """Contrastive alignment of the adapted vectors of one random item per domain of each row.

        item_seq: [B, L]; global_items: [n_items, H]. Mean over the pairs of domains, each over the
        rows that have items of both.
        """
        D = self.n_domains
        domains = torch.arange(D, device=item_seq.device)  # [D]
        in_domain = self.item_domain[item_seq].unsqueeze(1) == domains.view(1, D, 1)  # [B, D, L]
        draw = torch.rand(in_domain.shape, device=item_seq.device).masked_fill(~in_domain, -1.0)  # [B, D, L]
        picked = global_items[item_seq.gather(1, draw.argmax(-1))]  # [B, D, H] one random item per domain
        has = in_domain.any(-1)  # [B, D]
        losses = []
        for d in range(D):
            for e in range(d + 1, D):
                both = has[:, d] & has[:, e]  # [B]
                if both.any():
                    losses.append(soft_contrastive_loss(picked[both, d], picked[both, e], self.tau_reg))
        return torch.stack(losses).mean() if losses else global_items.new_zeros(())

    def profile_loss(self, users, global_states):
        """Contrastive alignment of each row's global state [B, H] with its user's adapted profile (users [B])."""
        has = self.has_profile[users]  # [B]
        profiles = self.user_adapter(self.profiles[users[has]])  # [B', H]
        return soft_contrastive_loss(profiles, global_states[has], self.tau)

