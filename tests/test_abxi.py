"""ABXI (recbole_tema/model/abxi.py): runs through the plugin pipeline, adapters, alignment, known answer."""

import math

import pytest
import torch

from recbole_tema.config import Config
from recbole_tema.errors import ConfigurationError
from recbole_tema.model.abxi import ABXI
from recbole_tema.quick_start import prepare_data, run
from support.configs import tiny_config
from support.datasets import known_answer_dataset, write_dataset
from support.models import assert_learns_known_answer

SMALL = {"embedding_size": 16, "inner_size": 32, "dlora_rank": 2, "ilora_rank": 4, "train_batch_size": 512}


def build(root, name, **overrides):
    """(model, train_data) for a dataset under root, without training."""
    config = Config(model="ABXI", dataset=name, config_dict=tiny_config(root, **{**SMALL, **overrides}))
    _, train_data, _, _ = prepare_data(config)
    return ABXI(config, train_data._dataset), train_data


def test_one_epoch_through_run_reports_every_domain(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=60)
    for train_rows in ("sequence", "prefix"):
        config = tiny_config(tmp_path, train_rows=train_rows, **SMALL)
        config["eval_args"] = {**config["eval_args"], "mode": "uni20"}
        result = run(model="ABXI", dataset=name, config_dict=config)
        test = result["test_result"]
        for domain in ("a", "b"):
            assert 0.0 <= test[f"hit@10/{domain}"] <= 1.0
            assert math.isfinite(test[f"mrr/{domain}"])
        assert test["targets"] == 60


def test_rank_zero_switches_adapters_off(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=20)
    full, _ = build(tmp_path, name, dlora_rank=3, ilora_rank=5)
    bare, _ = build(tmp_path, name, dlora_rank=0, ilora_rank=0)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    hidden, domains = SMALL["embedding_size"], 2
    # One dLoRA per sequence (merged + 2 domains), one iLoRA per domain; each holds 2 * hidden * rank.
    assert count(full) - count(bare) == (domains + 1) * 2 * hidden * 3 + domains * 2 * hidden * 5
    with pytest.raises(ConfigurationError, match="dlora_rank"):
        build(tmp_path, name, dlora_rank=-1)


def test_domain_streams_follow_the_task(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=20)
    model, _ = build(tmp_path, name)
    first_items = lambda d: torch.nonzero(model.item_domain == d).squeeze(1)[:2].tolist()  # noqa: E731
    (a1, a2), (b1, b2) = first_items(0), first_items(1)
    seq = torch.tensor([[a1, b1, a2, b2, 0]])  # [1, 5]
    # Next-item domains a1->b, b1->a, a2->b, b2->a (the row's target), then padding.
    task = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 1, 0]]).bool().view(1, 2, 5).flip(1)  # [1, D, L]
    streams = model._domain_streams(seq, task)  # [1, D, L]
    # Domain a is read where an a item is predicted: after b1 (latest a: a1) and after b2 (latest a: a2).
    assert streams[0, 0].tolist() == [0, a1, 0, a2, 0]
    # Domain b is read where a b item is predicted: after a1 (no b item yet) and after a2 (latest b: b1).
    assert streams[0, 1].tolist() == [0, 0, b1, 0, 0]


def test_scores_every_item_with_its_own_domain(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=20)
    model, train_data = build(tmp_path, name)
    model.eval()
    interaction = next(iter(train_data))
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)  # [B, n_items]
        assert scores.shape == (len(interaction), model.n_items)
        assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
        picked = scores.gather(1, interaction[model.POS_ITEM_ID].view(-1, 1)).squeeze(1)  # [B]
        assert torch.allclose(model.predict(interaction), picked, atol=1e-5)
        # Attending from the newest step only gives what attending from every step gives there.
        seq, length = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]  # [B, L], [B]
        last = length - 1  # [B]
        task = torch.zeros(len(seq), model.n_domains, seq.shape[1], dtype=torch.bool)  # [B, D, L]
        task[torch.arange(len(seq)), :, last] = True
        rows = torch.arange(len(seq)).repeat_interleave(model.n_domains)  # [B*D]
        doms = torch.arange(model.n_domains).repeat(len(seq))  # [B*D]
        every_step = model._encode(seq, task, rows, last[rows], doms)  # [B*D, H]
        newest_step = model._encode(seq, task, rows, last[rows], doms, last=last)  # [B*D, H]
        assert torch.allclose(every_step, newest_step, atol=1e-5)
        # A history without any item of domain b still gives finite domain-b scores.
        only_a = torch.nonzero(model.item_domain == 0).squeeze(1)[:3].view(1, 3)  # [1, 3]
        out = model.forward(only_a, torch.tensor([3]))  # [1, D, H]
        assert torch.isfinite(out).all()


def test_single_domain_dataset_is_refused(tmp_path):
    items = [f"i{k}" for k in range(20)]
    rows = [(f"u{u}", items[(u + s) % 20], 1000 + s) for u in range(10) for s in range(6)]
    write_dataset(tmp_path, "one", rows, {"item_id:token": items, "domain:token": ["x"] * 20})
    with pytest.raises(ConfigurationError, match="2 or more"):
        build(tmp_path, "one")


@pytest.mark.parametrize("scope", ["batch", "sequence"])
def test_negative_logits_score_each_draw_and_mask_the_users_items(tmp_path, scope):
    name = known_answer_dataset(tmp_path, n_users=20)
    model, train_data = build(tmp_path, name, train_neg_scope=scope, train_neg_per_domain=6)
    interaction = next(iter(train_data))
    seen = interaction[model.ITEM_SEQ]  # [B, L]
    B, L = seen.shape
    rows, pos = (model.loss_positions(interaction)).nonzero(as_tuple=True)  # [Q], [Q]
    h = torch.randn(len(rows), SMALL["embedding_size"])  # [Q, H]
    logits, negatives = model.negative_logits(h, rows, pos, seen)  # [Q, M]
    assert negatives.shape == ((12,) if scope == "batch" else (B, 12))  # 6 of each of the 2 domains
    drawn = negatives.expand(B, 12) if scope == "batch" else negatives  # [B, M] what each sequence faced
    assert (model.item_domain[drawn[:, :6]] == 0).all() and (model.item_domain[drawn[:, 6:]] == 1).all()
    expected = (h.unsqueeze(1) * model.item_embedding(drawn[rows])).sum(-1)  # [Q, M]
    owned = (seen[rows].unsqueeze(-1) == drawn[rows].unsqueeze(1)).any(1)  # [Q, M]
    assert owned.any() and (~owned).any()
    assert torch.allclose(logits[~owned], expected[~owned], atol=1e-5) and torch.isinf(logits[owned]).all()
    if scope == "sequence":  # the sequences face different negatives
        assert len({tuple(row) for row in negatives.tolist()}) > 1
    with pytest.raises(ConfigurationError, match="train_neg_scope"):
        build(tmp_path, name, train_neg_scope="position")


@pytest.mark.parametrize("scope", ["batch", "sequence"])
def test_learns_the_known_answer(tmp_path, scope):
    assert_learns_known_answer("ABXI", tmp_path, {**SMALL, "embedding_size": 32, "inner_size": 64, "weight_decay": 0.0,
                                                  "dropout_prob": 0.1, "train_neg_scope": scope})
