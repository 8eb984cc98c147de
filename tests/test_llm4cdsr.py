"""LLM4CDSR (recbole_tema/model/llm4cdsr.py): its columns, its two auxiliary terms, the CLI, the known answer."""

import logging
import subprocess
import sys

import pytest
import torch
import yaml

from recbole_tema.config import Config
from recbole_tema.errors import ConfigurationError
from recbole_tema.model.llm4cdsr import soft_contrastive_loss
from support.configs import tiny_config
from support.datasets import known_answer_dataset, write_dataset
from support.models import assert_learns_known_answer, build, check_finite, first_batch

SMALL = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 2, "train_batch_size": 64}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}
ALL_COLUMNS = {"item", "domain", "user"}


def small(root, **overrides):
    return tiny_config(root, **{**SMALL, **overrides})


def test_trains_on_every_column_and_scores_with_both_threads(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=40, length=8, llm=ALL_COLUMNS)
    model, train_data, valid_data = build("LLM4CDSR", name, small(tmp_path))
    assert model.domain_item_embedding is None and model.user_adapter is not None
    assert model.profiles.shape[1] == 10 and bool(model.has_profile[1:].all())
    check_finite(model, train_data, valid_data)
    # frozen LLM embeddings are buffers; the adapters are trained
    buffers, parameters = dict(model.named_buffers()), dict(model.named_parameters())
    assert "features.feat_llm_emb" in buffers and "features.feat_llm_emb_domain" in buffers
    assert "adapter.0.weight" in parameters and "user_adapter.0.weight" in parameters
    assert not any("llm_emb" in name for name in parameters)

    model.eval()
    interaction = first_batch(valid_data)
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)  # [B, n_items]
        picked = scores.gather(1, interaction[model.POS_ITEM_ID].view(-1, 1)).squeeze(1)  # [B]
        assert torch.allclose(model.predict(interaction), picked, atol=1e-5)
        # an item's score is the global thread's plus its own domain thread's
        table, _ = model.item_representations()  # [n_items, H + Hd]
        states = model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])  # [B, D, H + Hd]
        H = model.hidden_size
        for d in range(model.n_domains):
            pool = model.domain_pool(d)
            split = states[:, d, :H] @ table[pool, :H].t() + states[:, d, H:] @ table[pool, H:].t()  # [B, N_d]
            assert torch.allclose(scores[:, pool], split, atol=1e-5)
        # the domain part is the frozen per-domain embedding, the global part the adapted llm_emb
        assert torch.equal(table[:, H:], model.features.get("llm_emb_domain")[0])
        assert torch.allclose(table[1:, :H], model.adapter(model.features.get("llm_emb")[0][1:]))


def test_the_user_file_is_loaded_for_llm4cdsr_only(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=10, length=6, llm=ALL_COLUMNS)
    config = Config(model="LLM4CDSR", dataset=name, config_dict=small(tmp_path))
    assert config["load_col"]["user"] == ["user_id", "profile_emb"]
    assert config["load_col"]["item"] == ["item_id", "domain", "llm_emb", "llm_emb_domain"]
    assert "user" not in Config(model="TEMA", dataset=name, config_dict=small(tmp_path))["load_col"]


def test_runs_without_a_user_file_and_says_so(tmp_path, caplog):
    name = known_answer_dataset(tmp_path, n_users=30, length=8, llm={"item", "domain"})
    with caplog.at_level(logging.WARNING):
        model, train_data, valid_data = build("LLM4CDSR", name, small(tmp_path))
    assert "no [profile_emb] column" in caplog.text and "user-profile term is off" in caplog.text
    assert model.user_adapter is None
    check_finite(model, train_data, valid_data)


def test_a_dataset_without_llm_emb_is_refused(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=20, length=6)
    with pytest.raises(ConfigurationError, match=r"\[llm_emb\].*llm_emb stage of atomic_data_builders"):
        build("LLM4CDSR", name, small(tmp_path))


def test_without_llm_emb_domain_the_domain_threads_learn_id_embeddings(tmp_path, caplog):
    name = known_answer_dataset(tmp_path, n_users=30, length=8, llm={"item", "user"})
    with caplog.at_level(logging.WARNING):
        model, train_data, valid_data = build("LLM4CDSR", name, small(tmp_path))
    assert "no [llm_emb_domain] column" in caplog.text
    assert model.domain_item_embedding.weight.shape == (model.n_items, SMALL["hidden_size"])
    check_finite(model, train_data, valid_data)
    switched_off, _, _ = build("LLM4CDSR", known_answer_dataset(tmp_path, name="full", llm=ALL_COLUMNS),
                               small(tmp_path, domain_llm_emb=False))
    assert switched_off.domain_item_embedding is not None and "llm_emb_domain" not in switched_off.features.fields


def test_missing_embeddings_stay_finite(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=30, length=8, llm=ALL_COLUMNS)
    # empty cells: every 3rd item without its two embeddings, every 4th user without a profile
    for suffix, every, kept in (("item", 3, 2), ("user", 4, 1)):
        path = tmp_path / name / f"{name}.{suffix}"
        lines = path.read_text().splitlines()
        lines[1::every] = ["\t".join(line.split("\t")[:kept] + [""] * (len(line.split("\t")) - kept))
                           for line in lines[1::every]]
        path.write_text("\n".join(lines) + "\n")
    model, train_data, valid_data = build("LLM4CDSR", name, small(tmp_path))
    for field in ("llm_emb", "llm_emb_domain"):
        assert 0 < model.features.get(field)[1][1:].sum() < model.n_items - 1
    assert 0 < model.has_profile[1:].sum() < len(model.has_profile) - 1
    table, _ = model.item_representations()  # [n_items, H + Hd]
    assert (table[~model.features.get("llm_emb")[1]] == 0).all()  # a missing embedding adapts to zero
    check_finite(model, train_data, valid_data)


def test_the_profile_and_adapter_terms_change_the_loss(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=40, length=8, llm=ALL_COLUMNS)
    config = small(tmp_path, **NO_DROPOUT)
    full, train_data, _ = build("LLM4CDSR", name, config)
    batch = first_batch(train_data)
    H = full.hidden_size

    def loss_of(model):
        torch.manual_seed(0)  # the adapter term draws its items
        return model.calculate_loss(batch)

    def without(key):
        model, _, _ = build("LLM4CDSR", name, {**config, key: 0.0})
        model.load_state_dict(full.state_dict(), strict=False)
        return model

    no_profile, no_adapter = without("alpha"), without("beta")
    assert no_profile.user_adapter is None and not hasattr(no_profile, "profiles")
    loss = loss_of(full)
    with torch.no_grad():
        table, _ = full.item_representations()  # [n_items, H + Hd]
        states, _, has_target = full.target_states(batch, table, None)  # [Q, H + Hd], [B, L]
        rows, steps = has_target.nonzero(as_tuple=True)  # [Q], [Q]
        last = steps == batch[full.ITEM_SEQ_LEN][rows] - 1  # [Q]
        profile = full.profile_loss(batch[full.USER_ID][rows[last]], states[last, :H])
        torch.manual_seed(0)
        regularization = full.adapter_loss(batch[full.ITEM_SEQ], table[:, :H])
        assert profile > 0 and regularization > 0
        assert loss - loss_of(no_profile) == pytest.approx(0.1 * profile.item(), rel=1e-4)
        assert loss - loss_of(no_adapter) == pytest.approx(0.1 * regularization.item(), rel=1e-4)
    # each term reaches its adapter: the profile term the user adapter, the regularization the item adapter
    loss.backward()
    assert full.user_adapter[0].weight.grad.abs().sum() > 0
    no_profile.adapter_loss(batch[full.ITEM_SEQ], no_profile.item_representations()[0][:, :H]).backward()
    assert no_profile.adapter[0].weight.grad.abs().sum() > 0


def test_soft_contrastive_loss_prefers_matching_pairs():
    torch.manual_seed(0)
    x = torch.randn(8, 4)  # [N, H]
    assert soft_contrastive_loss(x, x.clone(), 1.0) < soft_contrastive_loss(x, x.roll(1, 0), 1.0)
    assert soft_contrastive_loss(x[:0], x[:0], 1.0) == 0  # no pair: no term
    # one pair: its only candidate is itself, nothing to learn
    assert soft_contrastive_loss(x[:1], x[1:2], 1.0) == pytest.approx(0.0, abs=1e-6)


def test_three_domains_run_and_every_pair_is_regularized(tmp_path):
    items = [f"{d}{k}" for d in "abc" for k in range(10)]
    rows = [(f"u{u}", items[(u + 7 * s) % 30], 1000 + s) for u in range(30) for s in range(8)]
    gen = torch.Generator().manual_seed(0)
    columns = {
        "item_id:token": items,
        "domain:token": [item[0] for item in items],
        "llm_emb:float_seq": torch.randn(30, 6, generator=gen).tolist(),
        "llm_emb_domain:float_seq": torch.randn(30, 4, generator=gen).tolist(),
    }
    write_dataset(tmp_path, "three", rows, columns)
    model, train_data, valid_data = build("LLM4CDSR", "three", small(tmp_path))
    assert model.n_domains == 3 and len(model.encoders.domain_threads.intra) == 3
    check_finite(model, train_data, valid_data)
    table = model.item_representations()[0][:, : model.hidden_size]  # [n_items, H]
    assert model.adapter_loss(first_batch(train_data)[model.ITEM_SEQ], table) > 0


def test_one_epoch_through_run_recbole(tmp_path):
    known_answer_dataset(tmp_path, n_users=40, length=8, llm=ALL_COLUMNS)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(small(tmp_path)))
    finished = subprocess.run(
        [sys.executable, "-m", "recbole_tema", "--model=LLM4CDSR", "--dataset=ka", f"--config_files={config_file}",
         "--epochs=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    table = finished.stdout.split("per target domain:")[1].splitlines()
    assert [line.split()[0] for line in table[1:] if line.strip()] == ["domain", "a", "b", "overall"]


def test_learns_the_known_answer(tmp_path):
    fast = {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "n_heads": 2, "hidden_dropout_prob": 0.1,
            "attn_dropout_prob": 0.0, "train_batch_size": 64, "epochs": 4}
    assert_learns_known_answer("LLM4CDSR", tmp_path, fast, dataset_options={"llm": ALL_COLUMNS})
