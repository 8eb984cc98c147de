"""Optional PCA of `float_seq` columns, so the atomic files stay small and load fast.

Fitted on the non-empty rows of the column; empty cells stay empty (they load as zeros and mean
"missing", which a projected zero vector would not). Fixed decimals are applied by the writer.
"""
from __future__ import annotations

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
