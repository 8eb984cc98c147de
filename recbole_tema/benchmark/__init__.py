"""The side-by-side cross-domain benchmark: ``python -m recbole_tema.benchmark --config examples/food_kitchen.yaml``.

``runner`` builds the dataset and trains every configured run resumably through the plugin's
pipeline; ``report`` writes the markdown tables and plots; ``machine`` describes where a figure was
measured (shared by every benchmark script of the repository).
"""
