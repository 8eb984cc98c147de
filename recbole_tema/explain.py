"""Why this item? Tag-grounded explanations of a trained TEMA checkpoint's recommendations.

    python -m recbole_tema.explain --model-file saved/TEMA-....pth --user USER [--domain D] [--k 10]
                                   [--drivers 3] [--format text|json|markdown]

or, from Python, ``explain(model_file, user, domain=None, k=10)``, which returns a JSON-ready dict.

For one user, after the history the test evaluated (every interaction before the user's test item),
the top-k items of each domain (items already in the history are not recommended), each with:

* ``drivers``: the history items that drive it, by leave-one-out. For every history position j the
  model is run again on the history without that item; ``drop`` = score - score without it, and
  ``share`` = max(drop, 0) / (sum of the positive drops over the whole history). The shares of all
  history items sum to 1 (all are 0 when no removal lowers the score). Attribution by the model's own
  score, so it is faithful by construction; ``drivers`` lists the largest shares.
* ``tags``: the item's tags with their weight in its representation (TEMA's tag pooling; they sum
  to 1), and ``shared_tags`` with each driver.
* ``user_state``: the score is exactly ``(g * intra) . v + ((1 - g) * cross) . v`` (TEMA's gate g
  between the intra-domain and the cross-domain state, v the item's vector; g = 1 for both terms
  with ``state_fusion: sum``); the two terms, their shares of the total magnitude, and the mean gate.
* ``modalities``: the item's fusion weights over its modalities (ID, text, tags, ...; they sum to 1;
  with ``modality_fusion: sum``, each term's share of the summed norms).

Items and users are shown by raw token, and by title where the dataset's ``.item`` has a ``title``.
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from recbole_tema.errors import ConfigurationError

TITLE_COLUMN = "title"


class Explainer:
    """A loaded TEMA checkpoint with its dataset; ``explain(user)`` gives one user's explanation."""

    def __init__(self, model_file):
        from recbole_tema.model.tema import TEMA
        from recbole_tema.quick_start import load_data_and_model

        if not Path(model_file).is_file():
            raise ConfigurationError(f"Model file [{model_file}] does not exist: pass a checkpoint written by "
                                     "run_recbole (saved/TEMA-<date>.pth).")
        self.model_file = str(model_file)
        self.config, self.model, self.dataset, _, _, test_data = load_data_and_model(model_file)
        if not isinstance(self.model, TEMA):
            raise ConfigurationError(f"[{model_file}] is a {type(self.model).__name__} checkpoint: explanations "
                                     "are for TEMA checkpoints.")
        self.model.eval()
        self.test = test_data._dataset.inter_feat
        self.uid_field, self.iid_field = self.dataset.uid_field, self.dataset.iid_field
        self.titles = _titles(Path(self.config["data_path"]) / f"{self.config['dataset']}.item", self.iid_field)
        with torch.no_grad():
            self.item_table, self.tag_table = self.model.item_representations()  # [n_items, H], [n_items, H] or None
            self.modality_names, vectors, present, _ = self.model.modalities()  # [M], [n_items, M, H], [n_items, M]
            fusion = self.model.fusion
            self.modality_weights = fusion.shares(vectors, present) if fusion is not None else None  # [n_items, M]
            self.tag_weights = self.model.tags.attention()[1] if self.model.tags is not None else None  # [n_items, T]

    # ------------------------------------------------------------------ lookups
    def _item(self, item_id):
        token = str(self.dataset.id2token(self.iid_field, int(item_id)))
        shown = {"item": token, "domain": self.model.domain_names[int(self.model.item_domain[item_id])]}
        if token in self.titles:
            shown["title"] = self.titles[token]
        return shown

    def _tags(self, item_id):
        """The item's tags, by name, with their pooling weights in its representation (largest first)."""
        if self.model.tags is None:
            return []
        ids = self.model.tags.tag_ids[item_id]  # [T]
        weights = self.tag_weights[item_id]  # [T]
        named = [(str(self.dataset.id2token(self.model.tag_field, int(tag))), float(weight))
                 for tag, weight in zip(ids, weights) if tag > 0]
        return sorted(named, key=lambda pair: -pair[1])

    def _history(self, user):
        try:
            user_id = self.dataset.token2id(self.uid_field, user)
        except ValueError:
            examples = ", ".join(str(token) for token in self.dataset.field2id_token[self.uid_field][1:4])
            raise ConfigurationError(f"User [{user}] is not in dataset [{self.config['dataset']}] "
                                     f"({self.dataset.user_num - 1:,} users, e.g. {examples}).") from None
        rows = (self.test[self.uid_field] == user_id).nonzero().flatten()
        if len(rows) == 0:
            raise ConfigurationError(f"User [{user}] has no test interaction in dataset [{self.config['dataset']}] "
                                     "(too few interactions for the leave-one-out split): nothing to explain.")
        row = int(rows[0])
        length = int(self.test[self.model.ITEM_SEQ_LEN][row])
        return self.test[self.model.ITEM_SEQ][row, :length], int(self.test[self.iid_field][row])  # [n], target

    def _domains(self, domain):
        if domain is None:
            return list(range(self.model.n_domains))
        if domain not in self.model.domain_names:
            raise ConfigurationError(f"Domain [{domain}] is not a domain of dataset [{self.config['dataset']}]; "
                                     f"its domains: {self.model.domain_names}.")
        return [self.model.domain_names.index(domain)]

    # ------------------------------------------------------------------ the explanation
    @torch.no_grad()
    def explain(self, user, domain=None, k=10, drivers=3):
        history, test_item = self._history(user)  # [n], int
        n = len(history)
        seq = history.view(1, n)  # [1, n]
        cross, intra = self.model.end_states(seq, torch.tensor([n]), self.item_table, self.tag_table)  # [1, D, H] each
        both = cross is not None and intra is not None
        terms = self.model.state_terms(cross, intra) if both else None  # ([1, D, H], [1, D, H])
        gate = self.model.intra_gate(cross, intra) if both and self.model.gate is not None else None  # [1, D, H]
        states = self.model.forward(seq, torch.tensor([n]), self.item_table, self.tag_table)  # [1, D, H]
        scores = self.model.score_per_domain(states, self.item_table)[0]  # [n_items]
        scores[history] = float("-inf")  # never recommend what the user already has

        # Leave-one-out: row j is the history without position j (left-aligned, padded with 0).
        keep = ~torch.eye(n, dtype=torch.bool)  # [n, n]
        without = torch.zeros(n, max(n - 1, 1), dtype=history.dtype)  # [n, n - 1]
        if n > 1:
            without = history.expand(n, n)[keep].view(n, n - 1)  # [n, n - 1]
        loo_states = self.model.forward(without, torch.full((n,), n - 1), self.item_table, self.tag_table)  # [n, D, H]

        explanation = {"user": user, "history": [self._item(item) for item in history.tolist()],
                       "test_item": self._item(test_item), "has_tags": self.model.tags is not None,
                       "recommendations": {}}
        for d in self._domains(domain):
            pool = self.model.domain_pool(d)  # [N_d]
            top = pool[scores[pool].topk(min(k, int(torch.isfinite(scores[pool]).sum()))).indices]  # [k]
            items = []
            for rank, item in enumerate(top.tolist(), 1):
                vector = self.item_table[item]  # [H]
                drops = scores[item] - loo_states[:, d] @ vector  # [n]
                items.append({
                    "rank": rank, **self._item(item), "score": float(scores[item]),
                    "is_test_item": item == test_item,
                    "drivers": self._drivers(history, drops, item, drivers),
                    "tags": [{"tag": tag, "weight": weight} for tag, weight in self._tags(item)],
                    "user_state": self._user_state(intra, terms, gate, d, vector),
                    "modalities": self._modalities(item),
                })
            explanation["recommendations"][self.model.domain_names[d]] = items
        return explanation

    def _drivers(self, history, drops, item, count):
        positive = drops.clamp(min=0)  # [n]
        shares = positive / positive.sum() if positive.sum() > 0 else torch.zeros_like(positive)  # [n], sums to 1
        own_tags = [tag for tag, _ in self._tags(item)]  # by weight in the item's representation
        order = torch.argsort(drops, descending=True)[:count]
        return [{**self._item(int(history[j])), "position": int(j) + 1, "share": float(shares[j]),
                 "drop": float(drops[j]),
                 "shared_tags": [tag for tag in own_tags if tag in {t for t, _ in self._tags(int(history[j]))}]}
                for j in order.tolist()]

    def _user_state(self, intra, terms, gate, d, vector):
        if terms is None:  # one encoder only: it decides alone
            part = "cross-domain" if intra is None else "intra-domain"
            return {"parts": {part: 1.0}, "terms": {}, "mean_gate": None}
        intra_part, cross_part = terms  # [1, D, H] each
        terms = {"intra-domain": float(intra_part[0, d] @ vector), "cross-domain": float(cross_part[0, d] @ vector)}
        total = sum(abs(value) for value in terms.values()) or 1.0
        return {"parts": {name: abs(value) / total for name, value in terms.items()}, "terms": terms,
                "mean_gate": float(gate[0, d].mean()) if gate is not None else None}

    def _modalities(self, item):
        if self.modality_weights is None:
            return {"id": 1.0}
        return {name: float(weight) for name, weight in zip(self.modality_names, self.modality_weights[item])}


def _titles(item_file, iid_field):
    """{item token: title} from the ``.item`` file's ``title`` column, {} where it has none."""
    if not item_file.is_file():
        return {}
    header = item_file.open(encoding="utf-8").readline().rstrip("\r\n").split("\t")
    names = [column.split(":")[0] for column in header]
    if TITLE_COLUMN not in names or iid_field not in names:
        return {}
    columns = [header[names.index(iid_field)], header[names.index(TITLE_COLUMN)]]
    table = pd.read_csv(item_file, sep="\t", usecols=columns, dtype=str, keep_default_na=False, quoting=3)
    return dict(zip(table[columns[0]], table[columns[1]]))


def explain(model_file, user, domain=None, k=10, drivers=3):
    """The explanation (a JSON-ready dict) of ``user``'s top-``k`` items per domain (or of ``domain``)."""
    return Explainer(model_file).explain(user, domain=domain, k=k, drivers=drivers)


# ---------------------------------------------------------------------- formats
def _name(entry):
    return f"{entry['item']} ({entry['title']})" if "title" in entry else entry["item"]


def _percent(value):
    return f"{100 * value:.0f}%"


def _state_line(state):
    parts = " · ".join(f"{name} {_percent(share)}" for name, share in state["parts"].items())
    return parts + (f" (mean gate {state['mean_gate']:.2f})" if state["mean_gate"] is not None else "")


def _driver_text(driver):
    shared = f" [shares: {', '.join(driver['shared_tags'])}]" if driver["shared_tags"] else ""
    return f"{_name(driver)} {_percent(driver['share'])}{shared}"


def to_text(explanation):
    lines = [f"User {explanation['user']}: {len(explanation['history'])} history items, most recent last: "
             + ", ".join(_name(item) for item in explanation["history"][-5:]),
             f"(held-out test item: {_name(explanation['test_item'])})"]
    if not explanation["has_tags"]:
        lines.append("This model has no tags (the dataset has none, or use_tags is off): no tag explanations.")
    for domain, items in explanation["recommendations"].items():
        lines += ["", f"Top {len(items)} in domain {domain}:"]
        for item in items:
            mark = "  <- the held-out test item" if item["is_test_item"] else ""
            lines.append(f"{item['rank']:>3}. {_name(item)}  score {item['score']:.3f}{mark}")
            lines.append("     driven by: " + " · ".join(_driver_text(driver) for driver in item["drivers"]))
            if item["tags"]:
                lines.append("     its tags: " + ", ".join(f"{tag['tag']} {tag['weight']:.2f}" for tag in item["tags"][:5]))
            lines.append("     user state: " + _state_line(item["user_state"]))
            lines.append("     modalities: " + " · ".join(f"{name} {weight:.2f}" for name, weight in item["modalities"].items()))
    return "\n".join(lines)


def to_markdown(explanation):
    lines = [f"**User {explanation['user']}**: {len(explanation['history'])} history items; most recent: "
             + ", ".join(_name(item) for item in explanation["history"][-5:])
             + f". Held-out test item: {_name(explanation['test_item'])}."]
    if not explanation["has_tags"]:
        lines.append("\nThis model has no tags: no tag explanations.")
    for domain, items in explanation["recommendations"].items():
        lines += ["", f"### Domain `{domain}`", "",
                  "| # | item | score | driven by (leave-one-out share) | its top tags | user state | modalities |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for item in items:
            tags = ", ".join(f"{tag['tag']} {tag['weight']:.2f}" for tag in item["tags"][:3]) or "none"
            modalities = ", ".join(f"{name} {weight:.2f}" for name, weight in item["modalities"].items())
            test = " (test item)" if item["is_test_item"] else ""
            lines.append(f"| {item['rank']} | {_name(item)}{test} | {item['score']:.3f} | "
                         f"{'; '.join(_driver_text(driver) for driver in item['drivers'])} | {tags} | "
                         f"{_state_line(item['user_state'])} | {modalities} |")
    return "\n".join(lines)


FORMATS = {"text": to_text, "markdown": to_markdown, "json": lambda explanation: json.dumps(explanation, indent=1)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_tema.explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-file", required=True, help="a TEMA checkpoint written by run_recbole")
    parser.add_argument("--user", required=True, help="the user's raw token (as in the .inter file)")
    parser.add_argument("--domain", help="explain this domain only (default: every domain)")
    parser.add_argument("--k", type=int, default=10, help="recommendations per domain (default 10)")
    parser.add_argument("--drivers", type=int, default=3, help="history items shown per recommendation (default 3)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="text")
    args = parser.parse_args(argv)
    try:
        explanation = explain(args.model_file, args.user, domain=args.domain, k=args.k, drivers=args.drivers)
    except ConfigurationError as error:
        print(f"explain: error: {error}", file=sys.stderr)
        return 2
    print(FORMATS[args.format](explanation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
