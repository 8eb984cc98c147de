"""Trainer mixins: checkpoint reloading that works on today's torch, and the cross-domain protocol."""

import time

import numpy as np
import torch
from recbole.utils import calculate_valid_score, set_color
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from recbole_tema import distributed
from recbole_tema.compat import load_checkpoint


class PluginTrainer:
    """Mix in before any RecBole trainer: checkpoint reloading and distributed training that work here.

    RecBole's own ``evaluate(load_best_model=True)`` and ``resume_checkpoint`` call ``torch.load``
    with its default ``weights_only=True``, which refuses RecBole's pickled Config on torch >= 2.6;
    here they go through ``compat.load_checkpoint``. In a distributed run (recbole_tema/distributed.py)
    RecBole wraps the model with a GPU-only ``DistributedDataParallel(device_ids=[rank])``; here the
    device ids follow the device (none on a CPU), every process uses rank 0's checkpoint name, and a
    process reloads a checkpoint only after rank 0 has written it.
    """

    def __init__(self, config, model):
        spread = distributed.is_distributed(config)
        config["single_spec"] = True  # RecBole's own wrapping assumes one GPU per process
        try:
            super().__init__(config, model)
        finally:
            config["single_spec"] = not spread
        if spread:
            device_ids = [config["local_rank"]] if config["device"].type == "cuda" else None
            self.distributed_model = DistributedDataParallel(self.model, device_ids=device_ids)
            self.saved_model_file = distributed.broadcast(self.saved_model_file)  # named by the clock: one name for all
        self.train_epoch_seconds = []  # wall seconds of each training epoch (no validation), for benchmarks

    def _train_epoch(self, *args, **kwargs):
        began = time.perf_counter()
        losses = super()._train_epoch(*args, **kwargs)
        self.train_epoch_seconds.append(round(time.perf_counter() - began, 2))
        return losses

    def _load_best(self, model_file):
        if distributed.is_distributed(self.config):
            torch.distributed.barrier()  # rank 0 has finished writing it
        checkpoint_file = model_file or self.saved_model_file
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")

    def resume_checkpoint(self, resume_file):
        # Same as RecBole's, but through load_checkpoint.
        self.saved_model_file = str(resume_file)
        checkpoint = load_checkpoint(self.saved_model_file, map_location=self.device)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning("The checkpoint was written by another model; loading its state_dict may fail.")
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            self._load_best(model_file)
        return super().evaluate(eval_data, load_best_model=False, model_file=model_file, show_progress=show_progress)


class CrossDomainEvaluation(PluginTrainer):
    """Mix in before a RecBole trainer: replaces ``evaluate`` with the cross-domain protocol's.

    Model selection is unchanged: RecBole's ``fit`` reads ``valid_metric`` from the dict returned
    here, so any overall or per-domain key (``mrr``, ``ndcg@10/food``) can select the model.
    """

    protocol = None

    def attach_protocol(self, protocol):
        self.protocol = protocol
        return self

    def _score_all_items(self, interaction):
        """[B, n_items] scores; models without full_sort_predict are scored item by item in batches."""
        n_items = self.protocol.domains.item_domain.numel()
        try:
            return self.model.full_sort_predict(interaction).view(len(interaction), n_items)  # [B, n_items]
        except NotImplementedError:
            pass
        repeated = interaction.repeat_interleave(n_items)  # B * n_items rows
        all_items = torch.arange(n_items, device=self.device).repeat(len(interaction))  # [B * n_items]
        repeated.update(type(interaction)({self.config["ITEM_ID_FIELD"]: all_items}))
        scores = torch.cat([self.model.predict(chunk) for chunk in _chunks(repeated, self.config["eval_batch_size"])])
        return scores.view(len(interaction), n_items)  # [B, n_items]

    def _valid_epoch(self, valid_data, show_progress=False):
        # RecBole's, with the phase said: validation ranks against the validation candidates.
        valid_result = self.evaluate(valid_data, load_best_model=False, show_progress=show_progress, phase="valid")
        return calculate_valid_score(valid_result, self.valid_metric), valid_result

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False, phase="test"):
        """The protocol's metrics of ``eval_data``, ranked against the candidates of ``phase`` (valid or test)."""
        if not eval_data:
            return None
        if load_best_model:
            self._load_best(model_file)
        _, ranks, domains = self.rank_targets(eval_data, show_progress=show_progress, phase=phase)
        return self.protocol.summarize(ranks, domains)

    @torch.no_grad()
    def rank_targets(self, eval_data, show_progress=False, phase="test"):
        """(users [T], ranks [T], target domains [T]) of every evaluation target, with the current weights.

        The per-user ranks behind the metrics: paired significance tests between models need them.
        """
        if self.protocol is None:
            raise RuntimeError("A cross-domain trainer needs attach_protocol(CrossDomainProtocol(...)) first.")
        self.model.eval()
        drawn = self.protocol.candidates(eval_data._dataset, phase)
        batches = eval_data
        if show_progress:
            batches = tqdm(eval_data, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink"))
        all_users, all_ranks, all_domains = [], [], []
        for batched_data in batches:
            interaction = batched_data[0].to(self.device)
            users = interaction[self.config["USER_ID_FIELD"]].cpu()  # [B]
            targets = interaction[self.config["ITEM_ID_FIELD"]]  # [B]
            domains = self.protocol.check_targets(targets.cpu())  # [B]
            candidates = None
            if drawn is not None:
                table, row_of_user = drawn
                candidates = table[row_of_user[users]].to(self.device)  # [B, N]
            scores = self._score_all_items(interaction)  # [B, n_items]
            all_users.append(users)
            all_ranks.append(self.protocol.rank(scores.float(), targets, candidates).cpu())
            all_domains.append(domains)
        users, ranks, domains = torch.cat(all_users), torch.cat(all_ranks), torch.cat(all_domains)  # [T] each
        if distributed.is_distributed(self.config):
            users, ranks, domains = _every_process(users, ranks, domains)
        return users, ranks, domains


def _every_process(users, ranks, domains):
    """The targets of every process: each ranked its share of the users (the distributed sampler pads the
    shares with repeated users, so each user is kept once). Every process gets the same, whole result."""
    gathered = distributed.gather((users, ranks, domains))
    users, ranks, domains = (torch.cat([part[k] for part in gathered]) for k in range(3))  # [T'] each
    _, first = np.unique(users.numpy(), return_index=True)
    keep = torch.from_numpy(np.sort(first))  # [T] first occurrence of each user
    return users[keep], ranks[keep], domains[keep]


def _chunks(interaction, size):
    for start in range(0, len(interaction), size):
        yield interaction[start : start + size]


def plugin_trainer_class(trainer_class, cross_domain):
    """The trainer class a model uses: with the cross-domain protocol, or with checkpoint reloading only."""
    mixin = CrossDomainEvaluation if cross_domain else PluginTrainer
    if issubclass(trainer_class, mixin):
        return trainer_class
    return type(f"{'CrossDomain' if cross_domain else 'Plugin'}{trainer_class.__name__}", (mixin, trainer_class), {})
