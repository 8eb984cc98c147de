"""Raw multi-domain interaction data -> enriched RecBole atomic files (``python -m atomic_data_builders``)."""
