"""Enrichment stages with the real offline MiniLM: text_emb, local tags, tag_emb, cache resume, PCA."""
import numpy as np
import pytest

from atomic_data_builders.enrich.items import ItemText
from atomic_data_builders.enrich.reduce import pca_column
from atomic_data_builders.enrich.tags_local import phrases, tag_items
from atomic_data_builders.enrich.text import CachedEncoder, tag_embeddings, text_embeddings
from support.raw_sources import FOOD_WORDS, KITCHEN_WORDS


@pytest.fixture(scope="module")
def minilm():
    """The MiniLM model, loaded once for the module (each test gets its own cache folder)."""
    return CachedEncoder(progress=False).model


def _encoder(minilm, cache_dir, **kw):
    enc = CachedEncoder(cache_dir=cache_dir, progress=False, **kw)
    enc._model = minilm
    return enc


def _items():
    out = []
    for domain, words in (("food", FOOD_WORDS), ("kitchen", KITCHEN_WORDS)):
        for k in range(16):
            out.append(ItemText(item_id=f"{domain[0]}{k}", domain=domain,
                                title=f"{['Acme', 'Bolt'][k % 2]} {words[k % len(words)]} 12 oz"))
    out.append(ItemText(item_id="blank", domain="food"))
    return out


def test_text_embeddings_real_minilm(minilm, tmp_path):
    enc = _encoder(minilm, tmp_path)
    items = _items()
    emb = text_embeddings(items, enc)
    assert emb["blank"] is None
    assert emb["f0"].shape == (384,)
    direct = minilm.encode(["Acme Organic Green Tea 12 oz"])[0]
    assert np.allclose(emb["f0"], direct, atol=1e-5)
    # semantic sanity: two tea items are closer than a tea item and a skillet
    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos(emb["f0"], emb["f7"]) > cos(emb["f0"], emb["k2"])


def test_encoder_resumes_from_cache_after_interruption(minilm, tmp_path):
    texts = [f"item number {k} with a title" for k in range(10)]
    enc = _encoder(minilm, tmp_path, chunk_size=3)
    calls = {"n": 0}
    real_encode = minilm.encode

    class Dying:
        def encode(self, batch, **kw):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt  # the process is stopped mid-stage
            return real_encode(batch, **kw)

        def get_sentence_embedding_dimension(self):
            return 384

    enc._model = Dying()
    with pytest.raises(KeyboardInterrupt):
        enc(texts)
    resumed = _encoder(minilm, tmp_path, chunk_size=3)
    vectors = resumed(texts)
    assert resumed.encoded == 4  # 2 chunks of 3 were cached before the interruption
    assert np.allclose(vectors, real_encode(texts), atol=1e-5)
    again = _encoder(minilm, tmp_path, chunk_size=3)
    again(texts)
    assert again.encoded == 0


def test_local_tagger_mines_shared_phrases(minilm, tmp_path):
    items = _items()
    report = {}
    tags = tag_items(items, {"min_df": 2, "max_df": 0.5, "min_tag_count": 2}, report=report,
                     encode=_encoder(minilm, tmp_path))
    assert "blank" not in tags
    assert len(tags) == 32
    for item in items[:-1]:
        own = set(p.replace(" ", "_") for p in phrases(item.title))
        assert tags[item.item_id], item
        for tag, _ in tags[item.item_id]:
            assert tag == tag.lower() and " " not in tag
            assert tag in own or any(tag in o or o in tag for o in own), (item.title, tag)  # merged forms
        assert abs(sum(w for _, w in tags[item.item_id]) - 1.0) < 1e-6
        assert not {t for t, _ in tags[item.item_id]} & {"oz", "12", "12_oz"}  # sizes are not tags
    # the kettle's best tag is about kettles/steel, not the brand
    assert tags["k0"][0][0] in {"stainless_steel_kettle", "steel_kettle", "kettle", "stainless_steel"}
    assert report["tags_local"]["items_tagged"] == 32


def test_tag_emb_is_weighted_mean(minilm, tmp_path):
    enc = _encoder(minilm, tmp_path)
    item_tags = {"a": [("green_tea", 0.75), ("kettle", 0.25)], "b": [], "c": [("mug", 0.0), ("tea", 0.0)]}
    emb = tag_embeddings(item_tags, enc)
    g, k, m, t = minilm.encode(["green tea", "kettle", "mug", "tea"])
    assert np.allclose(emb["a"], 0.75 * g + 0.25 * k, atol=1e-5)
    assert emb["b"] is None
    assert np.allclose(emb["c"], (m + t) / 2, atol=1e-5)  # all-zero weights: equal weights


def test_pca_keeps_empty_cells_and_reduces():
    rng = np.random.default_rng(0)
    values = [rng.normal(size=16) for _ in range(20)] + [None]
    out, info = pca_column(values, 4)
    assert out[-1] is None and out[0].shape == (4,)
    assert info["from"] == 16 and info["to"] == 4 and 0 < info["explained_variance"] <= 1
    projected = np.stack(out[:-1])
    assert np.allclose(projected.mean(axis=0), 0, atol=1e-6)  # centred
    variances = projected.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-9)  # components by decreasing variance
