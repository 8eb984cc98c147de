"""recbole-tema: LLM-enhanced, multimodal cross-domain sequential recommendation for RecBole."""

__version__ = "0.1.0"
