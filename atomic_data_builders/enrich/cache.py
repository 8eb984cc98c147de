"""On-disk caches that make every enrichment stage resumable.

- `ArrayCache`: vectors keyed by string, stored as immutable `.npz` shards written atomically; a
  stage that encodes in chunks puts each chunk as it finishes, so an interrupted stage loses at
  most the chunk in flight and a re-run encodes only what is missing.
- `JsonlCache`: JSON records keyed by their `key`, appended one line per put and flushed at once
  (thread-safe); a torn last line left by a killed run is cut on load, so that item is asked again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


def digest(*parts: str) -> str:
    """Stable short key of some strings (sha1 of their NUL-joined UTF-8)."""
    return hashlib.sha1("\0".join(parts).encode("utf-8")).hexdigest()


def slug(text: str, max_len: int = 60) -> str:
    """A folder-safe name for a model id, unique thanks to a hash suffix."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[-max_len:].strip("_") + "-" + digest(text)[:8]


class ArrayCache:
    """{key: float32 vector} in a folder of `.npz` shards (keys: str array, values: [n, dim]).

    With `folder=None` it lives in memory only (nothing to resume from).
    """

    def __init__(self, folder: Optional[Path]):
        self.folder = Path(folder) if folder is not None else None
        self._data: Dict[str, np.ndarray] = {}
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for shard in sorted(self.folder.glob("*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys, values = z["keys"], z["values"]
            except (OSError, ValueError, KeyError, EOFError):
                continue  # a shard that cannot be read is recomputed, never trusted
            self._data.update(zip(keys.tolist(), values))

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Optional[np.ndarray]:
        return self._data.get(key)

    def missing(self, keys: Iterable[str]) -> list:
        return [k for k in dict.fromkeys(keys) if k not in self._data]

    def put_many(self, keys: Sequence[str], values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32)  # [n, dim]
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} vectors")
        if not len(keys):
            return
        if self.folder is None:
            self._data.update(zip(keys, values))
            return
        fd, tmp = tempfile.mkstemp(suffix=".npz.tmp", dir=self.folder)
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, keys=np.asarray(list(keys), dtype=str), values=values)
        os.replace(tmp, self.folder / f"{uuid.uuid4().hex}.npz")
        self._data.update(zip(keys, values))


class JsonlCache:
    """Append-only JSONL file of finished records ``{"key": ..., ...}``; the last record of a key wins."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: Dict[str, dict] = {}
        self._load()
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a run killed mid-write left a partial line: cut it, re-ask that item
            log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", self.path,
                        len(data) - end)
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
        for lineno, line in enumerate(data[:end].decode("utf-8", "replace").splitlines(), 1):
            try:
                record = json.loads(line)
                self.records[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s:%d: unreadable cache record skipped (that item is asked again)", self.path, lineno)

    def get(self, key: str) -> Optional[dict]:
        return self.records.get(key)

    def put(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()  # visible to a later run even if this process is killed next
            self.records[record["key"]] = record

    def close(self) -> None:
        with self._lock:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
