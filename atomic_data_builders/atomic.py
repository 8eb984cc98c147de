"""Writing RecBole atomic files (docs/atomic_files.md) so that a reader never sees a half-written file.

Every file is written to a temporary name in the target folder and renamed over the final name
(`os.replace`, atomic on POSIX). `.inter` rows are grouped per user and, within a user, in the
true order of the source with strictly increasing timestamps: RecBole casts float fields to
float32 (ties reappear at ~128 s resolution) and then sorts stably, so the file order is what
finally decides the order of tied rows.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

# Column types of the .item file, in the order docs/atomic_files.md lists them; unknown columns follow.
ITEM_COLUMN_TYPES = {
    "item_id": "token",
    "domain": "token",
    "tags": "token_seq",
    "tag_weights": "float_seq",
    "tag_emb": "float_seq",
    "text_emb": "float_seq",
    "clip_txt": "float_seq",
    "clip_img": "float_seq",
    "llm_emb": "float_seq",
    "llm_emb_domain": "float_seq",
    "llm_text_emb": "float_seq",
}


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator:
    """Open a temporary sibling of `path`; on a clean exit, fsync and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding,
                       newline=None if "b" in mode else "\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def order_interactions(inter: pd.DataFrame, tie_step: float = 1.0) -> pd.DataFrame:
    """Rows grouped per user (users in order of first appearance), each user's rows in true order.

    `inter` has columns user_id, item_id, timestamp (seconds, float) and `order` (the position of
    the row in the source, which breaks timestamp ties). The returned timestamps are strictly
    increasing within a user: a row whose time is not above the previous row's gets the previous
    time + `tie_step` (the source's day-rounded ties become seconds apart, in source order).
    """
    if tie_step <= 0:
        raise ValueError(f"tie_step must be > 0, got {tie_step}")
    first_seen = inter.groupby("user_id", sort=False)["order"].transform("min")
    df = inter.assign(_first=first_seen).sort_values(["_first", "timestamp", "order"], kind="stable")
    df = df.drop(columns="_first").reset_index(drop=True)
    ts = df["timestamp"].to_numpy(dtype=np.float64)  # [N]
    users = df["user_id"].to_numpy()
    new_user = np.ones(len(df), dtype=bool)  # [N] True at each user's first row
    new_user[1:] = users[1:] != users[:-1]
    out = ts.copy()
    for i in range(1, len(out)):  # sequential by nature: each row depends on the previous one
        if not new_user[i] and out[i] <= out[i - 1]:
            out[i] = out[i - 1] + tie_step
    df["timestamp"] = out
    return df


def _format_float(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def write_inter(path: Path, inter: pd.DataFrame, tie_step: float = 1.0) -> pd.DataFrame:
    """Write `<name>.inter`: user_id:token, item_id:token, timestamp:float (+ rating:float).

    Returns the ordered frame that was written (see `order_interactions`).
    """
    df = order_interactions(inter, tie_step)
    has_rating = "rating" in df.columns and df["rating"].notna().any()
    header = ["user_id:token", "item_id:token", "timestamp:float"] + (["rating:float"] if has_rating else [])
    columns = [df["user_id"].astype(str).to_numpy(), df["item_id"].astype(str).to_numpy(),
               [_format_float(t) for t in df["timestamp"].to_numpy()]]
    if has_rating:
        columns.append(["" if pd.isna(r) else _format_float(r) for r in df["rating"].to_numpy()])
    _check_tokens("user_id", columns[0])
    _check_tokens("item_id", columns[1])
    with atomic_open(path) as handle:
        handle.write("\t".join(header) + "\n")
        handle.writelines("\t".join(row) + "\n" for row in zip(*columns))
    return df


def format_float_seq(vector: Optional[np.ndarray], decimals: Optional[int]) -> str:
    """One float_seq cell: space-separated values; "" for a missing vector (loads as zeros)."""
    if vector is None:
        return ""
    vector = np.asarray(vector, dtype=np.float64).ravel()
    if decimals is None:
        return " ".join(_format_float(v) for v in vector)
    # fixed decimals keep files small; "-0.0000" is written as "0.0000" so equal values read equal
    return " ".join(f"{v:.{decimals}f}" for v in np.round(vector, decimals) + 0.0)


def write_item(path: Path, items: pd.DataFrame, decimals: Optional[int] = None,
               column_types: Optional[Mapping[str, str]] = None) -> None:
    """Write `<name>.item`, one row per item.

    `items` has one row per item with column item_id, domain, and any enrichment columns:
    token_seq cells are lists of str (or None), float_seq cells 1-d arrays / lists (or None).
    A column's type comes from `column_types`, else ITEM_COLUMN_TYPES. Empty cells stay empty.
    """
    types = {**ITEM_COLUMN_TYPES, **(column_types or {})}
    for required in ("item_id", "domain"):
        if required not in items.columns:
            raise ValueError(f"the .item table needs a {required!r} column")
    unknown = [c for c in items.columns if c not in types]
    if unknown:
        raise ValueError(f"no atomic type known for .item column(s) {unknown}")
    names = [c for c in ITEM_COLUMN_TYPES if c in items.columns] + [c for c in items.columns
                                                                    if c not in ITEM_COLUMN_TYPES]
    _check_tokens("item_id", items["item_id"].astype(str))
    _check_tokens("domain", items["domain"].astype(str))
    cells = []
    for name in names:
        kind = types[name]
        values = items[name].tolist()
        if kind == "token":
            cells.append(["" if v is None else str(v) for v in values])
        elif kind == "float":
            cells.append(["" if v is None or pd.isna(v) else _format_float(v) for v in values])
        elif kind == "token_seq":
            column = []
            for v in values:
                tokens = [] if v is None else [str(t) for t in v]
                _check_tokens(name, tokens)
                column.append(" ".join(tokens))
            cells.append(column)
        elif kind == "float_seq":
            col_decimals = decimals if name != "tag_weights" else (None if decimals is None else max(decimals, 4))
            cells.append([format_float_seq(v, col_decimals) for v in values])
        else:
            raise ValueError(f"unsupported atomic type {kind!r} for column {name!r}")
    with atomic_open(path) as handle:
        handle.write("\t".join(f"{n}:{types[n]}" for n in names) + "\n")
        handle.writelines("\t".join(row) + "\n" for row in zip(*cells))


def write_user(path: Path, users: Sequence[str], vectors: Mapping[str, Optional[np.ndarray]],
               decimals: Optional[int] = None) -> None:
    """Write `<name>.user`: user_id:token, profile_emb:float_seq; one row per user, "" where no profile."""
    users = [str(u) for u in users]
    _check_tokens("user_id", users)
    with atomic_open(path) as handle:
        handle.write("user_id:token\tprofile_emb:float_seq\n")
        handle.writelines(f"{u}\t{format_float_seq(vectors.get(u), decimals)}\n" for u in users)


def read_inter(path: Path) -> pd.DataFrame:
    """The user_id, item_id (str) and timestamp (float, where present) columns of a `.inter` file, in file order."""
    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
    names = [h.split(":", 1)[0] for h in header]
    for required in ("user_id", "item_id"):
        if required not in names:
            raise ValueError(f"{path}: the header {header} has no {required} column")
    wanted = [n for n in ("user_id", "item_id", "timestamp") if n in names]
    frame = pd.read_csv(path, sep="\t", header=0, names=names, usecols=wanted, dtype=str, keep_default_na=False,
                        quoting=3)
    if "timestamp" in frame.columns:
        times = pd.to_numeric(frame["timestamp"], errors="coerce")
        if times.isna().any():
            bad = int(times.isna().to_numpy().argmax())
            raise ValueError(f"{path}:{bad + 2}: timestamp {frame['timestamp'].iloc[bad]!r} is not a number")
        frame["timestamp"] = times.astype(float)
    return frame[wanted]


def _check_tokens(field: str, tokens: Sequence[str]) -> None:
    """A token must not contain the field separator (tab), the seq separator (space) or a newline."""
    for token in tokens:
        if not token or any(ch in token for ch in " \t\n\r"):
            raise ValueError(f"invalid {field} token {token!r}: tokens must be non-empty and contain no whitespace")


def read_item(path: Path) -> pd.DataFrame:
    """Read back a `.item` file written by `write_item` (for re-running stages on a dataset)."""
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        names, kinds = zip(*(h.split(":", 1) for h in header))
        rows = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    data = {}
    for j, (name, kind) in enumerate(zip(names, kinds)):
        raw = [r[j] if j < len(r) else "" for r in rows]
        if kind == "token_seq":
            data[name] = [s.split(" ") if s else None for s in raw]
        elif kind == "float_seq":
            data[name] = [np.array(s.split(" "), dtype=np.float32) if s else None for s in raw]
        elif kind == "float":
            data[name] = [float(s) if s else None for s in raw]
        else:
            data[name] = raw
    return pd.DataFrame(data, columns=list(names))


def item_column_types(path: Path) -> dict:
    """{column: atomic type} from a `.item` header."""
    with open(path, encoding="utf-8") as handle:
        return dict(h.split(":", 1) for h in handle.readline().rstrip("\n").split("\t"))


# ---------------------------------------------------------------------------------------------
# The dataset folder changes as a whole: NAME.manifest.json fingerprints NAME.inter, NAME.item and,
# where the user_profile stage wrote them, NAME.user and NAME.profiles.jsonl.

FINGERPRINT_BYTES = 1 << 20  # the fingerprint reads the first and the last MiB of a file, and its size


def fingerprint(path: Path) -> str:
    """A quick content fingerprint: sha256 of the size, the first and the last MiB."""
    digest = hashlib.sha256()
    size = Path(path).stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
        handle.seek(max(size - FINGERPRINT_BYTES, 0))
        digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


def manifest_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}.manifest.json"


class DatasetFiles:
    """Replace a dataset's `.inter`, `.item`, `.user` and `.profiles.jsonl` together, detectably.

    Write each file to ``staged(suffix)``; ``commit()`` then deletes the files marked by ``drop``,
    writes the manifest (the fingerprints of the new files) and renames the staged files over the
    final names. A kill at any point leaves either the old files with the old manifest, or files
    that do not match the manifest, which ``check_manifest`` (run when the plugin loads the
    dataset) reports; never a silent mix. A file not staged keeps its current version.
    """

    SUFFIXES = ("inter", "item", "user", "profiles.jsonl")

    def __init__(self, folder: Path, name: str):
        self.folder, self.name = Path(folder), name
        self.dropped: set = set()

    def clear_staged(self) -> None:
        """Remove staged files an interrupted run left, so that only this run's files are committed."""
        for suffix in self.SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.staged(suffix))

    def drop(self, suffix: str) -> None:
        """Delete the final file of `suffix` at the commit (it no longer matches the other files)."""
        self.dropped.add(suffix)

    def final(self, suffix: str) -> Path:
        return self.folder / f"{self.name}.{suffix}"

    def staged(self, suffix: str) -> Path:
        return self.folder / f".{self.name}.{suffix}.staged"

    def commit(self) -> None:
        for suffix in self.dropped:  # first: killed later, the old manifest still names them, so it shows
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.final(suffix))
        sources = {suffix: self.staged(suffix) if self.staged(suffix).exists() else self.final(suffix)
                   for suffix in self.SUFFIXES}
        with atomic_open(manifest_path(self.folder, self.name)) as handle:
            json.dump({"files": {self.final(s).name: fingerprint(p) for s, p in sources.items() if p.exists()}},
                      handle, indent=1)
        for suffix, path in sources.items():
            if path == self.staged(suffix):
                os.replace(path, self.final(suffix))


def check_manifest(folder: Path, name: str) -> Optional[str]:
    """None when the folder's files match its manifest (or it has none), else what is wrong."""
    path = manifest_path(folder, name)
    if not path.exists():
        return None
    expected = json.loads(path.read_text(encoding="utf-8"))["files"]
    for file_name, digest in expected.items():
        file = Path(folder) / file_name
        if not file.exists() or fingerprint(file) != digest:
            return (f"{file} is not the file its build recorded in {path.name}: a build was interrupted while it "
                    "replaced the dataset's files, so they come from two builds. Run the same build command "
                    "again (it resumes from its cache).")
    return None
