"""The model harness: build a model without training to inspect its parts, and the known-answer test body."""

import math

import torch
from recbole.utils import init_seed

from recbole_tema.config import Config
from recbole_tema.data.domains import ItemDomains
from recbole_tema.quick_start import prepare_data, run
from recbole_tema.registry import get_model
from support.configs import tiny_config
from support.datasets import known_answer_dataset


def build(model_name, dataset_name, config_dict):
    """(model, train_data, valid_data) for a config, with a fixed seed for the weights."""
    config = Config(model=model_name, dataset=dataset_name, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, valid_data, _ = prepare_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset)
    return model, train_data, valid_data


def first_batch(loader):
    batch = next(iter(loader))
    return batch[0] if isinstance(batch, tuple) else batch


def n_parameters(model):
    return sum(p.numel() for p in model.parameters())


def check_finite(model, train_data, valid_data):
    """Loss of a training batch and in-domain full-sort scores of a valid batch are finite."""
    model.train()
    loss = model.calculate_loss(first_batch(train_data))
    assert math.isfinite(loss.item()), f"loss is {loss.item()}"
    loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), f"non-finite gradient in {name}"
    model.eval()
    with torch.no_grad():
        interaction = first_batch(valid_data)
        scores = model.full_sort_predict(interaction)  # [B, n_items]
        domains = ItemDomains.from_dataset(train_data._dataset)
        own = domains.masks.to(scores.device)[domains.item_domain[interaction[model.POS_ITEM_ID]]]  # [B, n_items]
        assert torch.isfinite(scores[own]).all(), "NaN/inf score for an item of the target's domain"
    return scores


def assert_removed_part_changes_scores(full, ablated, valid_data):
    """With every shared weight equal, the two models' scores differ only through the removed part."""
    kept = ablated.state_dict()
    shared = {k: v for k, v in full.state_dict().items() if k in kept and kept[k].shape == v.shape}
    ablated.load_state_dict(shared, strict=False)
    full.eval(), ablated.eval()
    interaction = first_batch(valid_data)
    with torch.no_grad():
        a, b = full.full_sort_predict(interaction), ablated.full_sort_predict(interaction)  # [B, n_items] each
    finite = torch.isfinite(a)
    assert (a[finite] - b[finite]).abs().max() > 1e-6


def assert_learns_known_answer(model, root, config_dict=None, min_hit10=0.6, dataset_options=None):
    """Train ``model`` on the known-answer data; every domain's test Hit@10 must reach ``min_hit10``.

    Chance is about 0.25, so a model that learns nothing fails. ``dataset_options``: keyword arguments
    of ``known_answer_dataset`` (``llm`` for LLM4CDSR's columns). Returns the run's result dict.
    """
    name = known_answer_dataset(root, **(dataset_options or {}))
    config = tiny_config(root, **{"epochs": 10, "learning_rate": 0.005, "stopping_step": 2, **(config_dict or {})})
    result = run(model=model, dataset=name, config_dict=config)
    test = result["test_result"]
    for domain in ("a", "b"):
        assert test[f"hit@10/{domain}"] >= min_hit10, f"{model} did not learn the known answer: {dict(test)}"
    return result
