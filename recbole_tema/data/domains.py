"""Which domain each item belongs to, read once from the dataset's ``domain`` item field."""

from dataclasses import dataclass

import numpy as np
import torch

from recbole_tema.errors import ConfigurationError

DEFAULT_DOMAIN_FIELD = "domain"


def domain_field_of(config):
    """Name of the item field holding the domain token (``DOMAIN_FIELD`` key, ``domain`` by default)."""
    return config["DOMAIN_FIELD"] or DEFAULT_DOMAIN_FIELD


def has_domains(dataset):
    """True when the loaded dataset carries a domain token for its items."""
    field = domain_field_of(dataset.config)
    return dataset.item_feat is not None and field in dataset.item_feat


@dataclass(frozen=True)
class ItemDomains:
    """Domain lookup in RecBole's internal item-id space.

    ``item_domain[i]`` is the domain index of internal item id ``i`` (``-1`` for the padding id 0
    and for items whose domain cell is empty); ``masks[d, i]`` says whether item ``i`` is in domain ``d``.
    Domain indices follow RecBole's token remapping of the field, so they are stable across models
    trained on the same dataset.
    """

    field: str
    names: list
    item_domain: torch.Tensor  # [n_items] long
    masks: torch.Tensor  # [n_domains, n_items] bool

    @property
    def num_domains(self):
        return len(self.names)

    @classmethod
    def from_dataset(cls, dataset):
        field = domain_field_of(dataset.config)
        if not has_domains(dataset):
            raise ConfigurationError(
                f"Dataset [{dataset.dataset_name}] has no item field [{field}]: a cross-domain model "
                f"needs a `{field}:token` column in {dataset.dataset_name}.item, loaded through "
                f"`load_col: {{item: [item_id, {field}, ...]}}`."
            )
        # Token id 0 is RecBole's padding token ('[PAD]'); real domain tokens are 1..num-1.
        tokens = list(dataset.field2id_token[field][1:])
        token_ids = torch.as_tensor(np.asarray(dataset.item_feat[field]))  # [n_items], 0 where unknown
        item_domain = token_ids.long() - 1  # [n_items]
        item_domain[0] = -1
        masks = item_domain.unsqueeze(0) == torch.arange(len(tokens)).unsqueeze(1)  # [n_domains, n_items]
        return cls(field=field, names=[str(t) for t in tokens], item_domain=item_domain, masks=masks)
