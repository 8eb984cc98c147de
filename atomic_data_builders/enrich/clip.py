"""CLIP text and image embeddings (`clip_txt`, `clip_img`) with clip-anytorch.

The model is `clip.load(name_or_path)`: a checkpoint name resolved in `download_root` (no hub is
reachable, so the file must already be there) or any local TorchScript / state-dict file.
Images come from a local folder (`<item_id>.<ext>`) or from the metadata's URL; downloads are
cached on disk, bounded by a timeout and a size limit, and must say they are images. Pillow's
decompression-bomb guard is an error here, not a warning. An item whose image is missing or
unusable gets an empty cell and is counted under its reason; nothing stops the build.
"""
from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from atomic_data_builders.enrich.cache import ArrayCache, digest, slug

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


@dataclass
class ImageConfig:
    image_dir: Optional[str] = None  # local images named <item_id>.<ext>; used before URLs
    download: bool = True  # fetch metadata URLs not found locally
    timeout: float = 10.0  # seconds per request (connect and read)
    max_bytes: int = 10 * 2 ** 20  # a larger download is refused
    max_pixels: int = 50_000_000  # Pillow's decompression-bomb limit
    workers: int = 8  # concurrent downloads
    cache_dir: Optional[str] = None  # downloaded files, by URL hash


class ImageError(Exception):
    """Why an item has no image embedding; `reason` is the report's counter name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def load_clip(name_or_path: str, download_root: Optional[str] = None):
    """(model, preprocess) on CPU in eval mode; a clear error when the weights are not local."""
    from atomic_data_builders._compat import prepare_model_imports

    prepare_model_imports()
    import clip

    is_file = os.path.isfile(name_or_path)
    if not is_file and name_or_path in clip.available_models():
        root = download_root or os.path.expanduser("~/.cache/clip")
        expected = os.path.join(root, os.path.basename(clip.clip._MODELS[name_or_path]))
        if not os.path.isfile(expected):
            raise FileNotFoundError(f"CLIP checkpoint {name_or_path!r} is not in {root} and no model hub is "
                                    f"reachable; put the file at {expected} or pass a local checkpoint path")
    elif not is_file:
        raise FileNotFoundError(f"CLIP model {name_or_path!r} is neither a file nor one of {clip.available_models()}")
    model, preprocess = clip.load(name_or_path, device="cpu", jit=False, download_root=download_root)
    return model.float().eval(), preprocess


def model_id(name_or_path: str) -> str:
    """Cache identity of a checkpoint: its name, or path + size + mtime (a new file is a new model)."""
    if os.path.isfile(name_or_path):
        st = os.stat(name_or_path)
        return f"{os.path.abspath(name_or_path)}:{st.st_size}:{int(st.st_mtime)}"
    return name_or_path


def clip_text_embeddings(items, model, name: str, cache_dir: Optional[Path], batch_size: int = 64,
                         progress: bool = True) -> Dict[str, Optional[np.ndarray]]:
    """{item_id: vector} of CLIP's text tower on the title (None for an item without a title)."""
    texts = {it.item_id: it.title or it.text() for it in items}
    with_text = [i for i, t in texts.items() if t]
    vectors = clip_encode_texts([texts[i] for i in with_text], model, name, cache_dir, batch_size, progress)
    out: Dict[str, Optional[np.ndarray]] = {i: None for i in texts}
    out.update(zip(with_text, vectors))
    return out


def clip_encode_texts(texts: Sequence[str], model, name: str, cache_dir: Optional[Path], batch_size: int = 64,
                      progress: bool = True, desc: str = "clip_txt") -> list:
    """CLIP text-tower vectors of `texts` (cut to the model's context, 77 tokens), each text cached once."""
    import clip
    import torch

    cache = ArrayCache(Path(cache_dir) / slug("clip_txt:" + model_id(name)) if cache_dir else None)
    keys = [digest(t) for t in texts]
    todo = list({k: t for k, t in zip(keys, texts) if cache.get(k) is None}.items())
    context = int(getattr(model, "context_length", 77))
    with torch.no_grad():
        for start in tqdm(range(0, len(todo), batch_size), desc=desc, unit="batch", disable=not progress or not todo):
            chunk = todo[start:start + batch_size]
            tokens = clip.tokenize([t for _, t in chunk], context_length=context, truncate=True)  # [b, ctx]
            vectors = model.encode_text(tokens).float().numpy()  # [b, dim]
            cache.put_many([k for k, _ in chunk], vectors)
    return [cache.get(k) for k in keys]


class ImageSource:
    """Bytes of an item's image: local folder first, then its URL through a download cache."""

    def __init__(self, config: ImageConfig):
        self.config = config
        self.index: Dict[str, Path] = {}
        if config.image_dir:
            for path in Path(config.image_dir).iterdir():
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    self.index.setdefault(path.stem, path)
        self.cache_dir = Path(config.cache_dir) if config.cache_dir else None
        self._session = None

    def fetch(self, item) -> bytes:
        if item.item_id in self.index:
            return self._read_local(self.index[item.item_id])
        ref = item.image
        if not ref:
            raise ImageError("missing", "no image file and no URL")
        if not ref.startswith(("http://", "https://")):
            return self._read_local(Path(ref))
        if not self.config.download:
            raise ImageError("missing", "downloads are off")
        return self._download(ref)

    def _read_local(self, path: Path) -> bytes:
        if not path.is_file():
            raise ImageError("missing", str(path))
        if path.stat().st_size > self.config.max_bytes:
            raise ImageError("too_large", f"{path} has {path.stat().st_size} bytes")
        return path.read_bytes()

    def _download(self, url: str) -> bytes:
        cached = self.cache_dir / digest(url) if self.cache_dir else None
        if cached is not None and cached.is_file():
            return cached.read_bytes()
        import requests

        if self._session is None:
            self._session = requests.Session()
        try:
            with self._session.get(url, stream=True, timeout=self.config.timeout) as reply:
                if reply.status_code != 200:
                    raise ImageError("http_error", f"HTTP {reply.status_code}")
                kind = reply.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not kind.startswith("image/"):
                    raise ImageError("bad_content_type", kind or "none")
                declared = int(reply.headers.get("Content-Length") or 0)
                if declared > self.config.max_bytes:
                    raise ImageError("too_large", f"Content-Length {declared}")
                body = bytearray()
                for block in reply.iter_content(64 * 1024):
                    body.extend(block)
                    if len(body) > self.config.max_bytes:  # servers may lie about or omit the length
                        raise ImageError("too_large", f"> {self.config.max_bytes} bytes")
        except requests.RequestException as err:
            reason = "timeout" if isinstance(err, requests.Timeout) else "download_error"
            raise ImageError(reason, type(err).__name__) from None
        if cached is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(bytes(body))
            os.replace(tmp, cached)
        return bytes(body)


def decode_image(data: bytes, max_pixels: int):
    """RGB PIL image; a decompression bomb or an undecodable file raises ImageError."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # above the limit: refuse, not warn
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()  # detects truncated / corrupt files without decoding everything
            image = Image.open(io.BytesIO(data))
            image.load()
            return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError("decompression_bomb", str(err)[:120]) from None
    except Exception as err:  # Pillow raises many types (OSError, SyntaxError, ValueError) on bad files
        raise ImageError("corrupt", f"{type(err).__name__}: {err}"[:120]) from None


def clip_image_embeddings(items: Sequence, model, preprocess, name: str, config: ImageConfig,
                          cache_dir: Optional[Path], batch_size: int = 32,
                          progress: bool = True) -> Tuple[Dict[str, Optional[np.ndarray]], Counter]:
    """({item_id: vector or None}, Counter of failure reasons) of CLIP's image tower."""
    import torch

    cache = ArrayCache(Path(cache_dir) / slug("clip_img:" + model_id(name)) if cache_dir else None)
    source = ImageSource(config)
    failures: Counter = Counter()
    out: Dict[str, Optional[np.ndarray]] = {it.item_id: None for it in items}

    def key(it) -> str:
        ref = str(source.index[it.item_id]) if it.item_id in source.index else (it.image or "")
        return digest(it.item_id, ref)

    todo = []
    for it in items:
        hit = cache.get(key(it))
        if hit is not None:
            out[it.item_id] = hit
        else:
            todo.append(it)

    def load(it):
        try:
            return it, preprocess(decode_image(source.fetch(it), config.max_pixels)), None  # [3, H, W]
        except ImageError as err:
            return it, None, err.reason

    bar = tqdm(total=len(todo), desc="clip_img", unit="image", disable=not progress or not todo)
    with ThreadPoolExecutor(max_workers=max(1, config.workers)) as pool, torch.no_grad():
        for start in range(0, len(todo), batch_size):
            batch = list(pool.map(load, todo[start:start + batch_size]))
            good = [(it, px) for it, px, _ in batch if px is not None]
            failures.update(reason for _, px, reason in batch if px is None)
            if good:
                pixels = torch.stack([px for _, px in good])  # [b, 3, H, W]
                vectors = model.encode_image(pixels).float().numpy()  # [b, dim]
                cache.put_many([key(it) for it, _ in good], vectors)
                out.update({it.item_id: v for (it, _), v in zip(good, vectors)})
            bar.update(len(batch))
    bar.close()
    return out, failures
