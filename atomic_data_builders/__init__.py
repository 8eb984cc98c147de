"""Raw multi-domain interaction data -> enriched RecBole atomic files.

Command line (see `python -m atomic_data_builders SOURCE --help`)::

    # the shared Amazon Food-Kitchen split: local tags + MiniLM text_emb + tag_emb by default
    python -m atomic_data_builders split --input ../shared/data/amazon-food-kitchen \\
        --output-dir dataset --dataset afk
    # Amazon 2014 ratings + metadata of two categories, CDSR filters, CLIP from a local checkpoint
    python -m atomic_data_builders amazon2014 --input raw/ --domains Grocery_and_Gourmet_Food=food \\
        Home_and_Kitchen=kitchen --k-core 5 --last-n 50 --clip-model ViT-B-32.pt --image-dir images/ \\
        --output-dir dataset --dataset fk
    # run stages again on a built dataset (LLM tags, PCA of text_emb to 64 dimensions)
    python -m atomic_data_builders enrich --output-dir dataset --dataset afk --stages tags tag_emb \\
        --tags openai --llm-base-url http://127.0.0.1:8080/v1 --pca text_emb=64

Output: `DIR/NAME/NAME.inter`, `DIR/NAME/NAME.item` (docs/atomic_files.md), `DIR/NAME/NAME.report.{json,md}`;
stage caches under `DIR/NAME/.cache` (or `--cache-dir`), so re-runs and interrupted runs recompute
nothing that finished. Modules: `sources/` (readers and filters), `enrich/` (stages), `atomic.py`
(atomic writers), `build.py` (pipeline), `report.py` (build report).
"""
