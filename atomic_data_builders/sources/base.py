"""What every source reader returns, and the line-by-line reading with clear errors they share."""
from __future__ import annotations

import gzip
import html
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import pandas as pd

from atomic_data_builders.enrich.items import ItemText

T = TypeVar("T")


class BadLineError(ValueError):
    """A malformed input line; the message names the file and the 1-based line number."""

    def __init__(self, path: Path, lineno: int, reason: str):
        super().__init__(f"{path}:{lineno}: {reason} (pass --skip-bad-lines to skip such lines)")
        self.path, self.lineno, self.reason = Path(path), lineno, reason


@dataclass
class BadLines:
    """Policy for malformed lines: raise at the first one, or skip and count them per file."""

    skip: bool = False
    counts: Counter = field(default_factory=Counter)
    examples: Dict[str, str] = field(default_factory=dict)  # first skipped line of each file

    def handle(self, path: Path, lineno: int, reason: str) -> None:
        if not self.skip:
            raise BadLineError(path, lineno, reason)
        self.counts[str(path)] += 1
        self.examples.setdefault(str(path), f"line {lineno}: {reason}")

    def summary(self) -> dict:
        return {"skipped": sum(self.counts.values()), "per_file": dict(self.counts), "first": dict(self.examples)}


@dataclass
class SourceData:
    """Interactions of several domains plus the text side of their items.

    `inter` columns: user_id (str), item_id (str), timestamp (float seconds), order (int, the
    row's position in the source: it breaks timestamp ties), domain (str), and rating (float)
    where the source has ratings. `items` maps every item id of `inter` to its ItemText.
    """

    inter: pd.DataFrame
    items: Dict[str, ItemText]
    domains: List[str]
    info: dict = field(default_factory=dict)  # source-specific facts for the build report


BOM = "\ufeff"


def open_text(path: Path):
    """Text handle of a plain or gzip-compressed file (by suffix); a UTF-8 byte-order mark is dropped."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _raw_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes; a truncated or corrupt gzip file stops with an error that names it."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rb") as handle:
            for lineno, line in enumerate(handle, start=1):
                yield line
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path}: the compressed file is truncated or corrupt after line {lineno} ({err}); "
                         "download or copy it again") from err


def parse_lines(path: Path, parse: Callable[[str], Optional[T]], bad: BadLines,
                skip_header: bool = False) -> Iterator[Tuple[int, T]]:
    """Yield (line number, parse(line)) for each non-blank line; a parse error goes to `bad`.

    Lines are decoded one by one, so a line that is not valid UTF-8 is a bad line like any other
    (named by file and line, skippable); a byte-order mark at the start of the file is dropped.
    `parse` raises ValueError/KeyError/TypeError/SyntaxError on a malformed line and may return
    None for a well-formed line to ignore.
    """
    for lineno, raw in enumerate(_raw_lines(path), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad.handle(path, lineno, f"not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})")
            continue
        if lineno == 1:
            line = line.removeprefix(BOM)
        if (skip_header and lineno == 1) or not line.strip():
            continue
        try:
            value = parse(line)
        except (ValueError, KeyError, TypeError, SyntaxError, IndexError, AttributeError) as err:
            bad.handle(path, lineno, f"{type(err).__name__}: {err}"[:300])
            continue
        if value is not None:
            yield lineno, value


_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def clean_text(value) -> str:
    """One line of plain text from a metadata field (str, list of str or None): HTML removed."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v)
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", str(value)))).strip()


def find_one(folder: Path, pattern: str, what: str, required: bool = True) -> Optional[Path]:
    """The single file of `folder` matching `pattern` (glob); an error names the candidates."""
    matches = sorted(Path(folder).glob(pattern))
    if len(matches) == 1:
        return matches[0]
    if not matches and not required:
        return None
    if not matches:
        raise FileNotFoundError(f"no {what} ({pattern}) in {folder}")
    raise ValueError(f"several {what} files in {folder}: {[m.name for m in matches]}; name one explicitly")
