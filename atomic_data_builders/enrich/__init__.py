"""Enrichment stages: tags, text / tag / CLIP embeddings, reduction; each cached and resumable."""
