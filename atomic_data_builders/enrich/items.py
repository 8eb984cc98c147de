"""The item record every enrichment stage reads (taggers, text and CLIP encoders).

A tagger is a callable ``tag_items(items, config) -> dict[item_id, list[(tag, weight)]]`` taking a
list of :class:`ItemText`; an item absent from the result gets empty ``tags`` / ``tag_weights``.
"""
from dataclasses import dataclass, field
from typing import List, Optional


@dataclass(frozen=True)
class ItemText:
    """Text side of one item, as read from the source metadata.

    ``description`` is "" when the source has none; ``categories`` is a flat list of category
    names, most general first (e.g. ["Grocery & Gourmet Food", "Beverages", "Tea"]), possibly empty.
    ``image`` is a local file path or an URL, or None (used by the CLIP stage only).
    ``brand`` is the maker or store where the source names one, else "" (used by llm_emb's item text).
    """

    item_id: str
    domain: str
    title: str = ""
    description: str = ""
    categories: List[str] = field(default_factory=list)
    image: Optional[str] = None
    brand: str = ""

    def text(self, with_description: bool = True, max_chars: int = 1000) -> str:
        """Title (+ description) as one string for text encoders; "" when the item has no text."""
        parts = [self.title.strip()]
        if with_description and self.description.strip():
            parts.append(self.description.strip())
        return ". ".join(p for p in parts if p)[:max_chars]
