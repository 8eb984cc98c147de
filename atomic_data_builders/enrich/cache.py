"""On-disk caches that make every enrichment stage resumable.

- `ArrayCache`: vectors keyed by string, stored as immutable `.npz` shards written atomically; a
  stage that encodes in chunks puts each chunk as it finishes, so an interrupted stage loses at
  most the chunk in flight and a re-run encodes only what is missing.
- `JsonlCache`: JSON values keyed by string, one line per put, flushed at once; a truncated last
  line (the process was killed mid-write) is ignored on load.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import numpy as np


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
    """{key: JSON value}, appended one line per `put`; the last value of a key wins."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data: Dict[str, object] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        self._data[record["key"]] = record["value"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut by an interruption
        self._handle = None

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default=None):
        return self._data.get(key, default)

    def put(self, key: str, value) -> None:
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps({"key": key, "value": value}) + "\n")
        self._handle.flush()
        self._data[key] = value

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
