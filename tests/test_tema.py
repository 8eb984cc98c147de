"""TEMA: trains and evaluates on tiny data, handles missing features, learns through tags, ablates."""

import math

import pytest
import torch

from recbole_tema.errors import ConfigurationError
from recbole_tema.model.layers import domain_subsequence
from recbole_tema.quick_start import run
from support.configs import small_model_config
from support.datasets import write_feature_dataset, write_tag_only_dataset
from support.models import (
    assert_learns_known_answer,
    assert_removed_part_changes_scores,
    build,
    check_finite,
    first_batch,
    n_parameters,
)

VARIANTS = {
    "all_features": dict(features=("text_emb", "clip_txt", "clip_img", "tag_emb"), tags=True, missing_every=0),
    "domain_only": dict(features=(), tags=False, missing_every=0),
    "missing_features": dict(features=("text_emb", "clip_txt", "clip_img", "tag_emb"), tags=True, missing_every=3),
    "three_domains": dict(features=("text_emb",), tags=True, missing_every=4, domains=("a", "b", "c")),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_trains_one_epoch_and_evaluates(tmp_path, variant):
    data_path = write_feature_dataset(tmp_path / "data", "feat", **VARIANTS[variant])
    config = small_model_config(data_path)
    result = run("TEMA", "feat", config_dict=config)
    domains = VARIANTS[variant].get("domains", ("a", "b"))
    for key in ["hit@10", "mrr"] + [f"hit@10/{domain}" for domain in domains]:
        assert math.isfinite(result["test_result"][key]), key
    assert result["test_result"]["targets"] == 60

    model, train_data, valid_data = build("TEMA", "feat", config)
    check_finite(model, train_data, valid_data)


def test_frozen_features_are_buffers_not_parameters(tmp_path):
    data_path = write_feature_dataset(tmp_path / "data", "feat", missing_every=3)
    model, _, _ = build("TEMA", "feat", small_model_config(data_path))
    parameters = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    assert sorted(model.features.fields) == ["clip_img", "clip_txt", "tag_emb", "text_emb"]
    for field in model.features.fields:
        assert f"features.feat_{field}" in buffers and f"features.feat_{field}" not in parameters
    # every third item has empty cells: it is marked missing for each modality and for tags
    assert not model.features.get("text_emb")[1][model.item_domain >= 0].all()
    assert not model.tags.present[1:].all()


def test_domain_subsequence_compacts_one_domain_in_order():
    item_seq = torch.tensor([[5, 7, 6, 8, 0], [7, 8, 0, 0, 0], [5, 0, 0, 0, 0]])  # [3, 5]
    item_domain = torch.tensor([-1, 0, 0, 0, 0, 0, 0, 1, 1])  # items 1-6 in domain 0, 7-8 in domain 1
    sub, lengths = domain_subsequence(item_seq, item_domain[item_seq], 1)
    assert sub.tolist() == [[7, 8], [7, 8], [0, 0]]
    assert lengths.tolist() == [2, 2, 0]
    sub, lengths = domain_subsequence(item_seq, item_domain[item_seq], 0)
    assert sub.tolist() == [[5, 6], [0, 0], [5, 0]]
    assert lengths.tolist() == [2, 0, 1]
    sub, lengths = domain_subsequence(item_seq, item_domain[item_seq], 1, max_len=1)  # most recent only
    assert sub.tolist() == [[8], [8], [0]]
    assert lengths.tolist() == [1, 1, 0]


def test_intra_domain_state_ignores_other_domains(tmp_path):
    data_path = write_feature_dataset(tmp_path / "data", "feat", missing_every=3)
    config = small_model_config(data_path, cross_domain_encoder=False)
    model, _, valid_data = build("TEMA", "feat", config)
    model.eval()
    interaction = first_batch(valid_data)
    item_seq, seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]  # [B, L], [B]
    target_domain = model.item_domain[interaction[model.POS_ITEM_ID]]  # [B]
    seq_domain = model.item_domain[item_seq]  # [B, L]
    # replace every item of another domain by a different item of that same other domain
    other = (seq_domain >= 0) & (seq_domain != target_domain.unsqueeze(1))  # [B, L]
    first_of = {d: int(model.domain_pool(d)[0]) for d in range(model.n_domains)}
    second_of = {d: int(model.domain_pool(d)[1]) for d in range(model.n_domains)}
    replaced = item_seq.clone()
    for d in range(model.n_domains):
        pick = other & (seq_domain == d)
        replaced[pick] = torch.where(item_seq[pick] == first_of[d], second_of[d], first_of[d])
    assert other.any()
    rows = torch.arange(len(target_domain))  # [B]
    with torch.no_grad():
        before = model(item_seq, seq_len)[rows, target_domain]  # [B, H] the target domain's state
        after = model(replaced, seq_len)[rows, target_domain]  # [B, H]
    assert torch.allclose(before, after, atol=1e-6)
    with torch.no_grad():
        model_with_cross, _, _ = build("TEMA", "feat", small_model_config(data_path))
        model_with_cross.eval()
        assert not torch.allclose(model_with_cross(item_seq, seq_len), model_with_cross(replaced, seq_len))


SWITCHES = {
    "use_tags": "tags",
    "tag_attention": None,
    "use_text": None,
    "use_clip_img": None,
    "use_clip_txt": None,
    "use_tag_emb": None,
    "intra_domain_encoder": "gate",
    "cross_domain_encoder": "gate",
}


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_switch_removes_its_part(tmp_path, switch):
    data_path = write_feature_dataset(tmp_path / "data", "feat")
    full, _, valid_data = build("TEMA", "feat", small_model_config(data_path))
    ablated, _, _ = build("TEMA", "feat", small_model_config(data_path, **{switch: False}))
    assert n_parameters(ablated) < n_parameters(full)
    if SWITCHES[switch]:
        assert getattr(ablated, SWITCHES[switch]) is None and getattr(full, SWITCHES[switch]) is not None
    assert_removed_part_changes_scores(full, ablated, valid_data)


def test_tags_carry_the_answer_to_unseen_items(tmp_path):
    """Targets are items never seen in training; only their tags link them to the history."""
    data_path = write_tag_only_dataset(tmp_path / "data", "tagds")
    results = {}
    for use_tags in (True, False):
        config = small_model_config(
            data_path, use_tags=use_tags, epochs=10, eval_step=100, train_batch_size=128,
            hidden_size=32, inner_size=64, learning_rate=0.003,
        )
        results[use_tags] = run("TEMA", "tagds", config_dict=config, saved=False)["test_result"]
    with_tags, without = results[True], results[False]
    # 8 groups x 7 items per domain: the target's group fills the top 7 only if tags are used
    assert with_tags["hit@10"] >= 0.8, dict(with_tags)
    assert with_tags["hit@10"] >= without["hit@10"] + 0.3, (dict(with_tags), dict(without))
    assert with_tags["mrr"] >= without["mrr"] + 0.03, (dict(with_tags), dict(without))


@pytest.mark.parametrize("train_rows,train_softmax", [("sequence", "full"), ("prefix", "full"), ("sequence", "sampled"), ("sequence", "infonce")])
def test_learns_the_shared_known_answer(tmp_path, train_rows, train_softmax):
    fast = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "learning_rate": 0.01, "epochs": 8, "train_rows": train_rows}
    # about 10 steps an epoch either way: 300 user sequences, or 2,700 prefix rows
    fast["train_batch_size"] = 32 if train_rows == "sequence" else 256
    fast.update(train_softmax=train_softmax, train_neg_per_domain=10)  # 10 of the 40 items of a domain
    assert_learns_known_answer("TEMA", tmp_path, fast)


def test_additive_fusions_learn_the_shared_known_answer(tmp_path):
    """LLM-EMF's additive forms in place of both gates (modality_fusion / state_fusion: sum)."""
    fast = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "learning_rate": 0.01, "epochs": 8,
            "train_batch_size": 32, "modality_fusion": "sum", "state_fusion": "sum"}
    assert_learns_known_answer("TEMA", tmp_path, fast)


def test_additive_fusions_replace_the_gates(tmp_path):
    data_path = write_feature_dataset(tmp_path / "data", "feat", missing_every=3)
    gated, _, valid_data = build("TEMA", "feat", small_model_config(data_path))
    additive, _, _ = build("TEMA", "feat", small_model_config(data_path, modality_fusion="sum", state_fusion="sum"))
    assert gated.gate is not None and additive.gate is None
    assert type(additive.fusion).__name__ == "WeightedModalitySum"
    # the sum: ID embedding + weighted modalities, missing ones adding nothing
    _, vectors, present, _ = additive.modalities()  # [n_items, M, H], [n_items, M]
    expected = vectors[:, 0] + (additive.fusion.weights.view(1, -1, 1) * vectors[:, 1:] * present[:, 1:, None]).sum(1)
    assert torch.allclose(additive.item_representations()[0], expected, atol=1e-6)
    cross, intra = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    assert torch.allclose(additive.combine(cross, intra), cross + intra)
    with pytest.raises(ConfigurationError, match=r"state_fusion \[mean\] must be one of \['gate', 'sum'\]"):
        build("TEMA", "feat", small_model_config(data_path, state_fusion="mean"))


def test_id_dropout_scores_cold_items_from_content(tmp_path):
    data_path = write_feature_dataset(tmp_path / "data", "feat")
    model, train_data, _ = build("TEMA", "feat", small_model_config(data_path, id_dropout=0.5))
    has_content = model.modalities()[2][:, 1:].any(1)  # [n_items]
    assert model.cold_items.any() and not model.cold_items.all()
    model.eval()  # evaluation: exactly the items never a training target lose their ID
    present = model.modalities()[2]  # [n_items, M]
    assert torch.equal(~present[:, 0], model.cold_items & has_content)
    model.train()  # training: about half of the items with content, drawn anew
    kept = torch.stack([model.modalities()[2][:, 0] for _ in range(20)]).float().mean(0)  # [n_items]
    assert 0.35 < kept[has_content].mean() < 0.65
    assert (kept[~has_content] == 1).all()
    with pytest.raises(ConfigurationError, match=r"id_dropout \[1.0\] must be in \[0, 1\)"):
        build("TEMA", "feat", small_model_config(data_path, id_dropout=1.0))


def test_id_dropout_trains_and_evaluates_end_to_end(tmp_path):
    data_path = write_feature_dataset(tmp_path / "data", "feat", missing_every=3)
    result = run("TEMA", "feat", config_dict=small_model_config(data_path, id_dropout=0.3), saved=False)
    assert math.isfinite(result["test_result"]["mrr"]) and result["test_result"]["targets"] == 60
