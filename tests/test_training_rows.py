"""Whole-sequence training rows (train_rows: sequence) and label-free scoring of the cross-domain models."""

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_tema.config import Config
from recbole_tema.data.training_rows import window_rows
from recbole_tema.errors import ConfigurationError
from recbole_tema.quick_start import prepare_data
from recbole_tema.registry import plugin_model_names
from support.configs import tiny_config
from support.datasets import known_answer_dataset
from support.models import build

SMALL = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "embedding_size": 16, "dlora_rank": 2, "ilora_rank": 4}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "dropout_prob": 0.0}
SEQUENCE_MODELS = ["TEMA", "LLMEMF", "ABXI", "LLM4CDSR"]
# The LLM columns LLM4CDSR needs (docs/atomic_files.md); the other models leave them unread.
LLM_COLUMNS = {"item", "domain", "user"}


def _all_rows(loader):
    """Every row of a loader, as one Interaction."""
    batches = [batch[0] if isinstance(batch, tuple) else batch for batch in loader]
    return Interaction({key: torch.cat([batch[key] for batch in batches]) for key in batches[0].interaction})


def test_window_rows_end_every_max_len_rows_counting_from_each_users_last():
    users = np.array([7, 7, 7, 7, 7, 3, 3, 9])
    assert window_rows(users, 2).tolist() == [0, 2, 4, 6, 7]
    assert window_rows(users, 10).tolist() == [4, 6, 7]
    assert window_rows(np.array([], dtype=np.int64), 3).tolist() == []


def test_windows_hold_each_users_training_sequence_exactly_and_nothing_after_it(tmp_path):
    # 12 interactions a user (no item twice), windows of 4: the 10 training items span three windows
    name = known_answer_dataset(tmp_path, n_users=30, length=12)
    config = Config(model="TEMA", dataset=name, config_dict=tiny_config(tmp_path, MAX_ITEM_LIST_LENGTH=4, **SMALL))
    dataset, train_data, _, _ = prepare_data(config)
    timelines = {}
    for line in sorted(
        (line.split("\t") for line in (tmp_path / name / f"{name}.inter").read_text().splitlines()[1:]),
        key=lambda cells: (cells[0], float(cells[2])),
    ):
        user, item = dataset.token2id(dataset.uid_field, line[0]), dataset.token2id(dataset.iid_field, line[1])
        timelines.setdefault(int(user), []).append(int(item))
    rows = _all_rows(train_data)
    inputs, lengths, targets = rows["item_id_list"], rows["item_length"], rows["item_id"]
    windows = {}
    for index, user in enumerate(rows["user_id"].tolist()):
        windows.setdefault(user, []).append(index)
    assert len(windows) == 30
    for user, indices in windows.items():
        timeline = timelines[user]
        indices.sort(key=lambda i: timeline.index(int(targets[i])))  # windows in time order
        rebuilt = inputs[indices[0]][:1].tolist()
        for i in indices:
            window = inputs[i][: lengths[i]].tolist()
            assert 1 <= len(window) <= 4
            assert window[0] == rebuilt[-1]  # a window starts at the previous one's last target
            rebuilt += window[1:] + [int(targets[i])]  # and adds its other inputs and its target
        assert rebuilt == timeline[:-2], f"user {user}: training windows {rebuilt}, timeline {timeline}"


def test_sequence_rows_are_refused_for_models_that_learn_from_the_last_position_only(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=10, length=6)
    config = Config(model="SASRec", dataset=name, config_dict=tiny_config(tmp_path, train_rows="sequence"))
    with pytest.raises(ConfigurationError, match="train_rows: prefix"):
        prepare_data(config)


@pytest.mark.parametrize("model_name", ["TEMA", "LLMEMF", "LLM4CDSR"])
def test_each_position_loss_equals_the_loss_of_its_prefix_row(tmp_path, model_name):
    # histories shorter than MAX_ITEM_LIST_LENGTH: each user's window is its whole training sequence
    name = known_answer_dataset(tmp_path, n_users=12, length=8, llm=LLM_COLUMNS)
    config = tiny_config(tmp_path, intra_max_len=None, **SMALL, **NO_DROPOUT)
    sequence_model, sequence_rows, _ = build(model_name, name, {**config, "train_rows": "sequence"})
    prefix_model, prefix_rows, _ = build(model_name, name, {**config, "train_rows": "prefix"})
    prefix_model.load_state_dict(sequence_model.state_dict())
    windows, prefixes = _all_rows(sequence_rows), _all_rows(prefix_rows)
    with torch.no_grad():
        nll_seq, has_seq = sequence_model.next_item_nll(windows)  # [U, L], [U, L]
        nll_pre, has_pre = prefix_model.next_item_nll(prefixes)  # [R, L], [R, L]
    prefix_nll = {
        (int(user), int(length)): float(nll_pre[row, length - 1])
        for row, (user, length) in enumerate(zip(prefixes["user_id"], prefixes["item_length"]))
    }
    assert has_pre.sum() == len(prefixes) and has_seq.sum() == len(prefixes)  # the same targets, once each
    compared = 0
    for row, user in enumerate(windows["user_id"].tolist()):
        for step in has_seq[row].nonzero().squeeze(1).tolist():
            assert nll_seq[row, step].item() == pytest.approx(prefix_nll[(user, step + 1)], rel=1e-4, abs=1e-5)
            compared += 1
    assert compared == len(prefixes)


@pytest.mark.parametrize("model_name", ["TEMA", "LLMEMF", "LLM4CDSR"])
def test_a_position_never_sees_the_items_after_it(tmp_path, model_name):
    name = known_answer_dataset(tmp_path, n_users=12, length=10, llm=LLM_COLUMNS)
    model, train_data, _ = build(model_name, name, tiny_config(tmp_path, **SMALL, **NO_DROPOUT))
    model.eval()
    rows = _all_rows(train_data)
    item_seq = rows[model.ITEM_SEQ]  # [B, L]
    t = 3
    changed = item_seq.clone()  # [B, L]
    # later items: any other item; the item after t (whose domain t is scored for): another of its domain
    changed[:, t + 2 :] = torch.where(item_seq[:, t + 2 :] > 0, item_seq[:, t + 2 :] % (model.n_items - 1) + 1, 0)
    for d in range(model.n_domains):
        pool = model.domain_pool(d)
        same = model.item_domain[item_seq[:, t + 1]] == d  # [B]
        changed[same, t + 1] = pool[(model.item_local[item_seq[same, t + 1]] + 1) % len(pool)]
    changed_rows = Interaction({**{key: rows[key] for key in rows.interaction}, model.ITEM_SEQ: changed})
    targets, changed_targets = model.next_items(rows), model.next_items(changed_rows)  # [B, L] each
    with torch.no_grad():
        table, tags = model.item_representations()
        before = model._states_at_every_position(item_seq, targets, table, tags)  # [B, L, H]
        after = model._states_at_every_position(changed, changed_targets, table, tags)  # [B, L, H]
    assert (changed != item_seq).any()
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not torch.allclose(before[:, t + 2 :], after[:, t + 2 :])


@pytest.mark.parametrize("model_name", plugin_model_names())
def test_scores_do_not_read_the_evaluation_target(tmp_path, model_name):
    name = known_answer_dataset(tmp_path, n_users=20, length=8, llm=LLM_COLUMNS)
    model, _, valid_data = build(model_name, name, tiny_config(tmp_path, **SMALL))
    model.eval()
    batch = next(iter(valid_data))[0]
    without_label = Interaction({key: batch[key] for key in (model.USER_ID, model.ITEM_SEQ, model.ITEM_SEQ_LEN)})
    other_label = Interaction({**{key: batch[key] for key in batch.interaction}, model.POS_ITEM_ID: batch[model.POS_ITEM_ID].flip(0)})
    with torch.no_grad():
        scores = model.full_sort_predict(batch)  # [B, n_items]
        assert torch.equal(scores, model.full_sort_predict(other_label))
        assert torch.equal(scores, model.full_sort_predict(without_label))


def test_sampled_softmax_estimates_the_full_in_domain_softmax(tmp_path):
    # 40 items a domain; with many uniform draws the corrected sampled loss approaches the full one
    name = known_answer_dataset(tmp_path, n_users=12, length=8)
    config = tiny_config(tmp_path, **SMALL)
    full, train_data, _ = build("TEMA", name, config)
    sampled, _, _ = build("TEMA", name, {**config, "train_softmax": "sampled", "train_neg_per_domain": 20000})
    sampled.load_state_dict(full.state_dict())
    full.eval(), sampled.eval()
    with torch.no_grad():
        table = full.item_embedding.weight * 20  # [n_items, H] spread the scores so the softmax is not flat
        states = torch.randn(64, table.shape[1])  # [Q, H]
        targets = torch.cat([full.domain_pool(0)[:32], full.domain_pool(1)[:32]])  # [Q]
        exact = full.in_domain_nll(states, targets, table)  # [Q]
        estimate = sampled.in_domain_nll(states, targets, table)  # [Q]
        few = build("TEMA", name, {**config, "train_softmax": "sampled", "train_neg_per_domain": 1})[0]
        one_negative_gap = (few.in_domain_nll(states, targets, table) - exact).abs().mean()
    assert torch.allclose(estimate, exact, rtol=0.03, atol=0.03)
    assert one_negative_gap > 0.5  # one negative is a poor estimate: the test can tell them apart


def test_infonce_is_the_uncorrected_sampled_softmax(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=12, length=8)
    config = {**tiny_config(tmp_path, **SMALL), "train_neg_per_domain": 5}
    infonce = build("TEMA", name, {**config, "train_softmax": "infonce"})[0]
    sampled = build("TEMA", name, {**config, "train_softmax": "sampled"})[0]
    with torch.no_grad():
        table = torch.randn_like(infonce.item_embedding.weight)  # [n_items, H]
        states = torch.randn(8, table.shape[1])  # [Q, H]
        targets = infonce.domain_pool(0)[:8]  # [Q] all of domain 0: one draw of negatives
        torch.manual_seed(0)
        got = infonce.in_domain_nll(states, targets, table)  # [Q]
        torch.manual_seed(0)
        negatives = infonce.uniform_negatives(0)  # [N] the draw the loss made
        torch.manual_seed(0)
        corrected = sampled.in_domain_nll(states, targets, table)  # [Q]
        neg_logit = (states @ table[negatives].t()).masked_fill(negatives.view(1, -1) == targets.view(-1, 1), float("-inf"))
        logits = torch.cat([(states * table[targets]).sum(-1, keepdim=True), neg_logit], 1)  # [Q, 1 + N]
    assert torch.allclose(got, -torch.log_softmax(logits, 1)[:, 0], atol=1e-6)
    assert (corrected > got).all()  # 5 of 39 other items: the correction weighs each negative up


def test_logit_adjustment_counts_each_training_target_once_and_lifts_rare_items(tmp_path):
    # windows of 4 over 10 training items a user: prefix and sequence rows must count the same targets
    name = known_answer_dataset(tmp_path, n_users=30, length=12)
    config = tiny_config(tmp_path, MAX_ITEM_LIST_LENGTH=4, logit_adjustment=1.0, **SMALL)
    by_window = build("TEMA", name, config)[0].log_prior
    by_prefix = build("TEMA", name, {**config, "train_rows": "prefix"})[0].log_prior
    assert torch.equal(by_window, by_prefix)
    assert int(torch.expm1(by_window).round().sum()) == 30 * 9  # 10 training items a user, 9 of them targets

    plain = build("TEMA", name, {**config, "logit_adjustment": 0.0})[0]
    adjusted = build("TEMA", name, config)[0]
    adjusted.load_state_dict(plain.state_dict())
    plain.eval(), adjusted.eval()
    with torch.no_grad():
        table = torch.zeros_like(plain.item_embedding.weight)  # every item scores 0: only the prior differs
        pool = plain.domain_pool(0)  # [N_0]
        rare = pool[adjusted.log_prior[pool].argmin()]
        states = torch.randn(1, table.shape[1])  # [1, H]
        target = torch.stack([rare])  # [1]
        # a rare target costs more under the adjusted softmax: its training pushes its score further up
        assert adjusted.in_domain_nll(states, target, table) > plain.in_domain_nll(states, target, table)
