"""Optional PCA of `float_seq` columns, so the atomic files stay small and load fast.

`pca_column` serves `--pca COLUMN=DIM`; `stored_pca` (llm_emb) keeps each fit in the stage's cache,
so that a re-run on the same vectors projects on the same axes and writes the same bytes.

Fitted on the non-empty rows of the column; empty cells stay empty (they load as zeros and mean
"missing", which a projected zero vector would not). Fixed decimals are applied by the writer.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np


def pca_column(values: List[Optional[np.ndarray]], dim: int) -> Tuple[List[Optional[np.ndarray]], dict]:
    """Project a column's vectors on its top `dim` principal components; returns (values, info)."""
    rows = [i for i, v in enumerate(values) if v is not None]
    if not rows:
        return values, {"skipped": "no vector"}
    matrix = np.stack([np.asarray(values[i], dtype=np.float64) for i in rows])  # [n, d]
    if dim >= matrix.shape[1]:
        return values, {"skipped": f"dim {dim} >= input dim {matrix.shape[1]}"}
    dim = min(dim, len(rows))
    mean = matrix.mean(axis=0)  # [d]
    _, singular, vt = np.linalg.svd(matrix - mean, full_matrices=False)  # vt: [min(n, d), d]
    components = vt[:dim]  # [dim, d]
    projected = (matrix - mean) @ components.T  # [n, dim]
    variance = singular ** 2
    out: List[Optional[np.ndarray]] = [None] * len(values)
    for row, i in enumerate(rows):
        out[i] = projected[row].astype(np.float32)
    info = {"from": int(matrix.shape[1]), "to": int(dim),
            "explained_variance": round(float(variance[:dim].sum() / max(variance.sum(), 1e-12)), 4)}
    return out, info


def parse_pca(specs: Optional[List[str]]) -> Dict[str, int]:
    """["text_emb=64", ...] -> {"text_emb": 64}."""
    out = {}
    for spec in specs or []:
        column, sep, dim = spec.partition("=")
        if not sep or not dim.isdigit() or int(dim) < 1:
            raise ValueError(f"--pca expects COLUMN=DIM (e.g. text_emb=64), got {spec!r}")
        out[column] = int(dim)
    return out


# ---------------------------------------------------------------------------------------------
# PCA fits kept on disk, so that a re-run of a stage on the same vectors writes the same bytes

def fit_pca(matrix: np.ndarray, dim: int) -> dict:
    """{mean [d], components [k, d], explained}: the top k = min(dim, n, d) principal axes of `matrix` [n, d].

    Each axis's sign is fixed (its largest loading is positive): SVD may return either sign.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    mean = matrix.mean(axis=0)  # [d]
    _, singular, vt = np.linalg.svd(matrix - mean, full_matrices=False)  # vt: [min(n, d), d]
    k = min(dim, vt.shape[0])
    components = vt[:k]  # [k, d]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])  # [k]
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    variance = singular ** 2
    return {"mean": mean, "components": components,
            "explained": float(variance[:k].sum() / max(variance.sum(), 1e-12))}


def project(matrix: np.ndarray, fit: dict, dim: int) -> np.ndarray:
    """[n, dim] float32: `matrix` [n, d] on the fit's axes; zeros pad a fit with fewer than `dim` axes."""
    out = np.zeros((len(matrix), dim), dtype=np.float32)
    projected = (np.asarray(matrix, dtype=np.float64) - fit["mean"]) @ fit["components"].T  # [n, k]
    out[:, :projected.shape[1]] = projected
    return out


def stored_pca(matrix: np.ndarray, dim: int, folder: Path, name: str) -> Tuple[dict, bool]:
    """(fit, reused): the fit of `matrix` to `dim` axes, read from `folder` when this exact input was fitted before.

    The file name hashes the input (its float32 bytes and shape) and `dim`: the same vectors get the
    same axes, bit for bit, whatever the BLAS or thread count of the run; other vectors get a new fit.
    """
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    key = hashlib.sha256(f"{matrix.shape}:{dim}".encode() + matrix.tobytes()).hexdigest()[:20]
    path = Path(folder) / f"{name}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {"mean": z["mean"], "components": z["components"], "explained": float(z["explained"])}, True
        except (OSError, ValueError, KeyError, EOFError):
            pass  # unreadable: fitted again and rewritten
    fit = fit_pca(matrix, dim)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz.tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        np.savez(handle, mean=fit["mean"], components=fit["components"], explained=np.float64(fit["explained"]))
    os.replace(tmp, path)
    return fit, False
