"""CLIP stages through the real clip.load code path with a tiny random checkpoint saved by the test;
images from a local folder and from URLs served by a local HTTP server (good, corrupt, bomb, wrong type)."""
import http.server
import io
import json
import threading

import numpy as np
import pytest

from atomic_data_builders._compat import prepare_model_imports
from atomic_data_builders.enrich import clip as clip_stage
from atomic_data_builders.enrich.items import ItemText
from support.raw_sources import read_item, run_cli, write_amazon2018


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    prepare_model_imports()
    import clip.model
    import torch

    torch.manual_seed(0)
    model = clip.model.CLIP(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=64,
                            vision_patch_size=16, context_length=77, vocab_size=49408, transformer_width=64,
                            transformer_heads=1, transformer_layers=1)
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def _png(size=(40, 30), color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def image_server():
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    big = buffer.getvalue()  # random pixels do not compress: ~270 KB
    bomb = _png((3000, 3000), (0, 0, 0))  # 9 megapixels of one colour compress to a small file
    assert len(bomb) < 100_000 < len(big)
    routes = {"/good.png": ("image/png", _png()), "/page.png": ("text/html", b"<html>not an image</html>"),
              "/corrupt.png": ("image/png", _png()[:40]), "/big.png": ("image/png", big),
              "/bomb.png": ("image/png", bomb)}
    hits = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path not in routes:
                self.send_error(404)
                return
            kind, body = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.end_headers()  # no Content-Length: the size limit must hold while streaming
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_clip_load_and_text_embeddings(tiny_clip, tmp_path):
    model, preprocess = clip_stage.load_clip(tiny_clip)
    items = [ItemText("a", "food", title="green tea"), ItemText("b", "food", title="cast iron pan"),
             ItemText("c", "food")]
    emb = clip_stage.clip_text_embeddings(items, model, tiny_clip, tmp_path, progress=False)
    assert emb["c"] is None and emb["a"].shape == (32,)
    assert not np.allclose(emb["a"], emb["b"])
    import clip
    import torch

    with torch.no_grad():
        direct = model.encode_text(clip.tokenize(["green tea"])).numpy()[0]
    assert np.allclose(emb["a"], direct, atol=1e-5)


def test_missing_named_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model hub"):
        clip_stage.load_clip("ViT-B/32", download_root=str(tmp_path))


def test_image_failures_are_empty_cells_and_counted(tiny_clip, tmp_path, image_server):
    base, hits = image_server
    local = tmp_path / "images"
    local.mkdir()
    (local / "loc.jpg").write_bytes(_png())
    (local / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    items = [ItemText("loc", "food"), ItemText("broken", "food"), ItemText("none", "food"),
             ItemText("url", "food", image=f"{base}/good.png"), ItemText("html", "food", image=f"{base}/page.png"),
             ItemText("cut", "food", image=f"{base}/corrupt.png"), ItemText("big", "food", image=f"{base}/big.png"),
             ItemText("bomb", "food", image=f"{base}/bomb.png"), ItemText("gone", "food", image=f"{base}/404.png")]
    config = clip_stage.ImageConfig(image_dir=str(local), max_bytes=100_000, max_pixels=1_000_000,
                                    timeout=5, workers=3, cache_dir=str(tmp_path / "dl"))
    model, preprocess = clip_stage.load_clip(tiny_clip)
    emb, failures = clip_stage.clip_image_embeddings(items, model, preprocess, tiny_clip, config,
                                                     tmp_path / "cache", progress=False)
    assert {i for i, v in emb.items() if v is not None} == {"loc", "url"}
    assert failures == {"corrupt": 2, "missing": 1, "bad_content_type": 1, "too_large": 1,
                        "decompression_bomb": 1, "http_error": 1}
    assert emb["url"].shape == (32,)
    # a second run: embeddings from the cache, the good download not fetched again
    emb2, _ = clip_stage.clip_image_embeddings(items, model, preprocess, tiny_clip, config,
                                               tmp_path / "cache", progress=False)
    assert np.allclose(emb2["url"], emb["url"]) and hits["/good.png"] == 1


def test_cli_clip_columns_from_amazon2018(tiny_clip, tmp_path):
    raw = write_amazon2018(tmp_path / "raw")  # image URLs point to an unreachable host (.invalid)
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "F1.png").write_bytes(_png())
    assert run_cli("amazon2018", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "d",
                   "--k-core", 1, "--no-all-domains", "--tags", "none", "--no-text-emb", "--clip-model", tiny_clip,
                   "--image-dir", images, "--no-download", "--no-progress") == 0
    item = read_item(tmp_path / "out/d/d.item")
    assert list(item.columns) == ["item_id:token", "domain:token", "clip_txt:float_seq", "clip_img:float_seq"]
    cells = dict(zip(item["item_id:token"], item["clip_img:float_seq"]))
    assert len(cells["F1"].split()) == 32 and cells["K1"] == ""
    assert all(len(c.split()) == 32 for c in item["clip_txt:float_seq"])
    report = json.loads((tmp_path / "out/d/d.report.json").read_text())
    assert report["stages"]["clip_img"]["failures"] == {"missing": 4}
