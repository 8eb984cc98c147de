"""C2DSR (recbole_tema/model/c2dsr.py): pipeline runs, training-only item graphs, encoders, known answer."""

import math
import subprocess
import sys

import pytest
import torch
import yaml
from recbole.data import create_dataset, data_preparation

import recbole_tema.model.c2dsr as c2dsr_module
from recbole_tema.config import Config
from recbole_tema.errors import ConfigurationError
from recbole_tema.model.c2dsr import C2DSR, transition_graphs
from recbole_tema.quick_start import run
from support.configs import tiny_config
from support.datasets import known_answer_dataset, write_dataset
from support.models import assert_learns_known_answer

SMALL = {"hidden_size": 16, "n_layers": 1, "train_batch_size": 256}


def build(root, name, **overrides):
    """(model, dataset, train_data) for a dataset under root, without training."""
    config = Config(model="C2DSR", dataset=name, config_dict=tiny_config(root, **{**SMALL, **overrides}))
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    return C2DSR(config, train_data._dataset), dataset, train_data


def held_out_dataset(root, name="leak", n_users=12):
    """Each user: 5 shared training items, then a valid and a test item nobody else has.

    Any graph edge touching a ``v*`` / ``t*`` item (or the user's last training item -> ``v*``) would
    come from the valid or test split.
    """
    train_items = [f"a{k}" for k in range(6)] + [f"b{k}" for k in range(6)]
    held_out = [f"v{u}" for u in range(n_users)] + [f"t{u}" for u in range(n_users)]
    rows, timelines = [], {}
    for user in range(n_users):
        timeline = [train_items[(user + 2 * step) % 12] for step in range(5)] + [f"v{user}", f"t{user}"]
        timelines[f"u{user}"] = timeline
        rows += [(f"u{user}", item, 100 * user + step) for step, item in enumerate(timeline)]
    items = train_items + held_out
    # a* and v* are food, b* and t* kitchen: held-out targets fall in both domains.
    domains = ["food" if item[0] in "av" else "kitchen" for item in items]
    write_dataset(root, name, rows, {"item_id:token": items, "domain:token": domains})
    return name, timelines


def edges(graph, dataset):
    """Set of (src token, dst token) of a sparse item graph."""
    tokens = dataset.field2id_token[dataset.iid_field]
    src, dst = graph.coalesce().indices().tolist()
    return {(tokens[s], tokens[d]) for s, d in zip(src, dst)}


def test_one_epoch_through_run_recbole(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=40, length=8)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny_config(tmp_path, **SMALL)))
    finished = subprocess.run(
        [sys.executable, "-m", "recbole_tema", "--model=C2DSR", f"--dataset={name}", f"--config_files={config_file}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    table = finished.stdout.split("per target domain:")[1].splitlines()
    assert [line.split()[0] for line in table[1:] if line.strip()] == ["domain", "a", "b", "overall"]


def test_recbole_prefix_scheme_runs_under_sampled_protocol(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=40, length=8)
    config = tiny_config(tmp_path, full_sequence_training=False, **SMALL)
    config["eval_args"] = {**config["eval_args"], "mode": "uni20"}
    test = run(model="C2DSR", dataset=name, config_dict=config)["test_result"]
    assert test["targets"] == 40
    for domain in ("a", "b"):
        assert 0.0 <= test[f"hit@10/{domain}"] <= 1.0 and math.isfinite(test[f"mrr/{domain}"])


def test_graphs_hold_exactly_the_training_transitions(tmp_path):
    name, timelines = held_out_dataset(tmp_path)
    model, dataset, train_data = build(tmp_path, name)
    assert len(train_data._dataset) < len(dataset)  # the model was given the training split only
    expected_cross, expected_single = set(), set()
    for timeline in timelines.values():
        train = timeline[:-2]
        expected_cross |= set(zip(train[:-1], train[1:]))
        for letter in "ab":
            in_domain = [item for item in train if item[0] == letter]
            expected_single |= set(zip(in_domain[:-1], in_domain[1:]))
    assert edges(model.cross_graph, dataset) == expected_cross
    assert edges(model.single_graph, dataset) == expected_single
    for graph in (model.cross_graph, model.single_graph):
        touched = {item for edge in edges(graph, dataset) for item in edge}
        assert not any(item[0] in "vt" for item in touched)
        rows = torch.sparse.sum(graph, dim=1).to_dense()  # [n_items] each row sums to 1 or is empty
        assert torch.allclose(rows[rows > 0], torch.ones_like(rows[rows > 0]))
    # The same construction over the whole (unsplit) dataset does see valid and test items, so the
    # assertions above can fail: the split is what keeps them out.
    leaky, _ = transition_graphs(dataset, model.item_domain.cpu())
    assert ("v0", "t0") in edges(leaky, dataset)


def test_run_builds_the_model_from_the_training_split(tmp_path, monkeypatch):
    name, _ = held_out_dataset(tmp_path)
    built = []

    def recording_graphs(dataset, item_domain):
        graphs = transition_graphs(dataset, item_domain)
        built.append((dataset, graphs))
        return graphs

    monkeypatch.setattr(c2dsr_module, "transition_graphs", recording_graphs)
    config = tiny_config(tmp_path, **SMALL)
    config["eval_args"] = {**config["eval_args"], "mode": "uni5"}
    run(model="C2DSR", dataset=name, config_dict=config)
    dataset, graphs = built[0]  # the model run() trains
    held_out = {token for token in dataset.field2id_token[dataset.iid_field] if token[0] in "vt"}
    assert not held_out & {item for graph in graphs for edge in edges(graph, dataset) for item in edge}


def test_domain_users_read_the_last_item_of_their_domain():
    # Positions: a, b, a, pad; per-domain features encode "domain * 10 + position + 1".
    seq_domain = torch.tensor([[0, 1, 0, -1]])  # [1, 4]
    merged = torch.zeros(1, 4, 1)  # [1, 4, 1]
    per_domain = [torch.arange(1.0, 5.0).view(1, 4, 1) + 10 * d for d in range(2)]  # 2 x [1, 4, 1]
    users = C2DSR._users(merged, per_domain, seq_domain)  # [2, 1, 4, 1]
    assert users[0, 0, :, 0].tolist() == [1.0, 1.0, 3.0, 3.0]  # last a item at or before each position
    assert users[1, 0, :, 0].tolist() == [0.0, 12.0, 12.0, 12.0]  # no b item yet at position 0


def test_scores_corruption_and_timeline_rows(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=20)
    model, _, train_data = build(tmp_path, name)
    model.eval()
    batch = next(iter(train_data))
    seq = batch[model.ITEM_SEQ]  # [B, L]
    with torch.no_grad():
        scores = model.full_sort_predict(batch)  # [B, n_items]
        assert scores.shape == (len(batch), model.n_items)
        assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
        picked = scores.gather(1, batch[model.POS_ITEM_ID].view(-1, 1)).squeeze(1)  # [B]
        assert torch.allclose(model.predict(batch), picked, atol=1e-5)
    seq_domain = model.item_domain[seq]  # [B, L]
    corrupted = model._corrupt(seq, seq_domain, 0)  # [B, L]
    assert (corrupted[seq_domain == 0] == seq[seq_domain == 0]).all()  # kept domain untouched
    assert (model.item_domain[corrupted[seq_domain == 1]] == 0).all()  # other domain replaced in-domain
    assert (corrupted[seq == 0] == 0).all()  # padding stays padding
    # full_sequence_training: exactly one row per user, the one ending its training timeline
    # (known_answer_dataset: 12 events, 2 held out, so that row's history has 9 items).
    batches = list(train_data)  # one pass: each pass reshuffles the rows
    ends = torch.cat([model._timeline_rows(b) for b in batches])  # [R]
    lengths = torch.cat([b[model.ITEM_SEQ_LEN] for b in batches])  # [R]
    assert ends.sum() == 20 and (lengths[ends] == 9).all()


def test_training_step_reaches_every_part(tmp_path):
    name = known_answer_dataset(tmp_path, n_users=20)
    model, _, train_data = build(tmp_path, name, train_batch_size=1000)
    model.calculate_loss(next(iter(train_data))).backward()
    for part in ("cross_gnn", "domain_gnns", "cross_encoder", "domain_encoders", "discriminators", "head"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), part
    model.zero_grad()
    batch = next(iter(train_data))
    others = batch[~model._timeline_rows(batch)]
    loss = model.calculate_loss(others)  # no timeline ends: nothing to learn, still backpropagates
    loss.backward()
    assert loss.item() == 0.0


def test_only_two_domains_are_accepted(tmp_path):
    items = [f"i{k}" for k in range(18)]
    rows = [(f"u{u}", items[(u + s) % 18], 1000 + s) for u in range(10) for s in range(6)]
    write_dataset(tmp_path, "three", rows, {"item_id:token": items, "domain:token": ["x", "y", "z"] * 6})
    with pytest.raises(ConfigurationError, match="exactly two domains"):
        build(tmp_path, "three")


def test_learns_the_known_answer(tmp_path):
    # ~45 user timelines per step; 3 epochs reach valid MRR ~0.97 (chance Hit@10 is ~0.25).
    config = {"hidden_size": 32, "n_layers": 1, "dropout_prob": 0.1, "train_batch_size": 512, "epochs": 3}
    assert_learns_known_answer("C2DSR", tmp_path, config)
