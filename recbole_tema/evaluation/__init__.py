"""The cross-domain evaluation protocol (candidates, ranks, per-domain metrics) and the trainer mixin that applies it."""
