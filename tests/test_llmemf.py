"""LLMEMF: trains and evaluates on tiny data, handles missing features, uses no tags, ablates."""

import math

import pytest

from recbole_tema.quick_start import run
from support.configs import small_model_config
from support.datasets import write_feature_dataset
from support.models import (
    assert_learns_known_answer,
    assert_removed_part_changes_scores,
    build,
    check_finite,
    n_parameters,
)

VARIANTS = {
    "all_features": dict(features=("text_emb", "clip_txt", "clip_img", "tag_emb"), tags=True, missing_every=0),
    "domain_only": dict(features=(), tags=False, missing_every=0),
    "missing_features": dict(features=("clip_txt", "clip_img"), tags=False, missing_every=3),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_trains_one_epoch_and_evaluates(tmp_path, variant):
    data_path = write_feature_dataset(tmp_path / "data", "feat", **VARIANTS[variant])
    config = small_model_config(data_path)
    result = run("LLMEMF", "feat", config_dict=config)
    for key in ("hit@10", "mrr", "hit@10/a", "hit@10/b"):
        assert math.isfinite(result["test_result"][key]), key
    assert result["test_result"]["targets"] == 60

    model, train_data, valid_data = build("LLMEMF", "feat", config)
    check_finite(model, train_data, valid_data)


def test_uses_clip_and_text_features_but_no_tags(tmp_path):
    data_path = write_feature_dataset(tmp_path / "data", "feat")
    model, _, _ = build("LLMEMF", "feat", small_model_config(data_path, use_tag_emb=True))
    assert sorted(model.features.fields) == ["clip_img", "clip_txt", "text_emb"]
    assert not any("tag" in name for name, _ in model.named_parameters())
    assert "features.feat_clip_img" in dict(model.named_buffers())
    assert "features.feat_clip_img" not in dict(model.named_parameters())


def test_llm_written_text_replaces_the_raw_clip_text(tmp_path):
    data_path = write_feature_dataset(tmp_path / "data", "feat", features=("text_emb", "clip_txt", "clip_img", "llm_text_emb"))
    model, train_data, valid_data = build("LLMEMF", "feat", small_model_config(data_path))
    assert sorted(model.features.fields) == ["clip_img", "llm_text_emb", "text_emb"]
    check_finite(model, train_data, valid_data)
    without, _, _ = build("LLMEMF", "feat", small_model_config(data_path, use_llm_text=False))
    assert sorted(without.features.fields) == ["clip_img", "clip_txt", "text_emb"]


SWITCHES = ("use_text", "use_clip_img", "use_clip_txt", "intra_domain_encoder", "cross_domain_encoder")


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_removes_its_part(tmp_path, switch):
    data_path = write_feature_dataset(tmp_path / "data", "feat")
    full, _, valid_data = build("LLMEMF", "feat", small_model_config(data_path))
    ablated, _, _ = build("LLMEMF", "feat", small_model_config(data_path, **{switch: False}))
    assert n_parameters(ablated) < n_parameters(full)
    assert_removed_part_changes_scores(full, ablated, valid_data)


def test_both_encoders_off_is_refused(tmp_path):
    data_path = write_feature_dataset(tmp_path / "data", "feat")
    config = small_model_config(data_path, intra_domain_encoder=False, cross_domain_encoder=False)
    with pytest.raises(ValueError, match="intra_domain_encoder"):
        build("LLMEMF", "feat", config)


def test_learns_the_shared_known_answer(tmp_path):
    fast = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "train_batch_size": 256, "learning_rate": 0.01, "epochs": 8}
    assert_learns_known_answer("LLMEMF", tmp_path, fast)
