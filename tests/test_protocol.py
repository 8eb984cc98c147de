"""The cross-domain protocol on a hand-made two-domain dataset whose answers are known."""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn

from recbole_tema.config import Config
from recbole_tema.evaluation.protocol import CrossDomainProtocol
from recbole_tema.quick_start import build_trainer, prepare_data
from support.configs import tiny_config
from support.datasets import known_answer_dataset

ITEMS_PER_DOMAIN = 15
N_USERS = 20


class _FixedScorer(SequentialRecommender):
    """Scores without learning; subclasses say how. One parameter so the trainer has something to optimize."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.unused = nn.Parameter(torch.zeros(1))

    def calculate_loss(self, interaction):
        return self.unused.sum()

    def predict(self, interaction):
        return self.full_sort_predict(interaction).gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)


class Oracle(_FixedScorer):
    """Knows the answer: the target scores 1, everything else 0."""

    def full_sort_predict(self, interaction):
        targets = interaction[self.POS_ITEM_ID]  # [B]
        return nn.functional.one_hot(targets, self.n_items).float()  # [B, n_items]


class Constant(_FixedScorer):
    def full_sort_predict(self, interaction):
        return torch.zeros(len(interaction), self.n_items)  # [B, n_items]


class NaNScorer(_FixedScorer):
    """NaN everywhere except a high score for the target: NaN rivals must still count against it."""

    def full_sort_predict(self, interaction):
        scores = torch.full((len(interaction), self.n_items), float("nan"))  # [B, n_items]
        return scores.scatter(1, interaction[self.POS_ITEM_ID].unsqueeze(1), 10.0)


def _evaluate(model_class, tmp_path, mode):
    name = known_answer_dataset(tmp_path, n_users=N_USERS, items_per_domain=ITEMS_PER_DOMAIN, length=8)
    config_dict = tiny_config(tmp_path)
    config_dict["eval_args"]["mode"] = mode
    config = Config(model=model_class, dataset=name, config_dict=config_dict)
    dataset, train_data, valid_data, test_data = prepare_data(config)
    model = model_class(config, train_data._dataset)
    trainer = build_trainer(config, model, train_data)
    return trainer, dataset, train_data, valid_data, trainer.evaluate(valid_data, load_best_model=False)


def test_oracle_hits_first_in_every_domain(tmp_path):
    for mode in ("full", "uni5"):
        *_, result = _evaluate(Oracle, tmp_path, mode)
        assert result["hit@1/a"] == result["hit@1/b"] == result["mrr"] == 1.0


def test_constant_scorer_gets_the_worst_rank(tmp_path):
    *_, full = _evaluate(Constant, tmp_path, "full")
    # Full ranking: all 14 other items of the domain tie with the target and all count against it.
    assert full["mrr"] == round(1 / ITEMS_PER_DOMAIN, 4)
    assert full["hit@10"] == 0.0
    *_, sampled = _evaluate(Constant, tmp_path, "uni5")
    assert sampled["mrr"] == round(1 / 6, 4)


def test_nan_scores_count_against_the_target(tmp_path):
    *_, result = _evaluate(NaNScorer, tmp_path, "full")
    assert result["mrr"] == round(1 / ITEMS_PER_DOMAIN, 4)


def test_per_domain_keys_and_counts_add_up(tmp_path):
    *_, result = _evaluate(Oracle, tmp_path, "uni5")
    for key in ("hit@1", "hit@5", "hit@10", "ndcg@10", "mrr@10", "mrr"):
        assert {key, f"{key}/a", f"{key}/b"} <= set(result)
    assert result["targets/a"] + result["targets/b"] == result["targets"] == N_USERS
    assert result["targets/a"] > 0 and result["targets/b"] > 0


def _raw_timelines(folder, name, dataset):
    """Each user's internal item ids in time order, read from the raw .inter file."""
    timelines = {}
    with open(folder / name / f"{name}.inter", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            user, item, time = line.rstrip("\n").split("\t")
            timelines.setdefault(user, []).append((float(time), item))
    return {
        int(dataset.token2id(dataset.uid_field, user)): [int(dataset.token2id(dataset.iid_field, i)) for _, i in sorted(rows)]
        for user, rows in timelines.items()
    }


def test_sampled_candidates_are_in_domain_and_unseen(tmp_path):
    trainer, dataset, _, valid_data, _ = _evaluate(Constant, tmp_path, "uni5")
    protocol = trainer.protocol
    table, row_of_user = protocol.candidates(valid_data._dataset, "valid")
    eval_inter = valid_data._dataset.inter_feat
    timelines = _raw_timelines(tmp_path, "ka", dataset)
    for user, target in zip(eval_inter[dataset.uid_field].tolist(), eval_inter[dataset.iid_field].tolist()):
        candidates = table[row_of_user[user]]
        candidates = candidates[candidates > 0]
        assert len(candidates) == 5
        target_domain = protocol.domains.item_domain[target]
        assert (protocol.domains.item_domain[candidates] == target_domain).all()
        # The valid target is the second-to-last of the user's 8 interactions.
        assert timelines[user][6] == target
        history = set(timelines[user][:6])
        assert not (set(candidates.tolist()) & (history | {target}))


def test_two_models_see_identical_candidates(tmp_path):
    first, _, _, first_valid, _ = _evaluate(Oracle, tmp_path / "one", "uni5")
    second, _, _, second_valid, _ = _evaluate(Constant, tmp_path / "two", "uni5")
    first_table, _ = first.protocol.candidates(first_valid._dataset, "valid")
    second_table, _ = second.protocol.candidates(second_valid._dataset, "valid")
    assert torch.equal(first_table, second_table)


def test_sampled_draw_is_seeded(tmp_path):
    trainer, _, train_data, valid_data, _ = _evaluate(Constant, tmp_path, "uni5")
    config = trainer.config
    again = CrossDomainProtocol(config, train_data._dataset)
    config["eval_seed"] = 7
    reseeded = CrossDomainProtocol(config, train_data._dataset)
    table, _ = trainer.protocol.candidates(valid_data._dataset, "valid")
    assert torch.equal(table, again.candidates(valid_data._dataset, "valid")[0])
    assert not torch.equal(table, reseeded.candidates(valid_data._dataset, "valid")[0])
