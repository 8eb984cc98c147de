"""A canned OpenAI-compatible server for the LLM stage tests: chat completions and embeddings.

It speaks just enough of the API for the real `openai` client. Replies come from functions of the
request body, so a test can answer per prompt (tags, llm_text, profile clusters and merges), from a
script (`scripted`), fail on purpose (an int is an HTTP status; 429 says Retry-After: 0), or return
a malformed payload. Every request is recorded with its Authorization header, and the most requests
ever in flight at once are counted.
"""
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def fake_vector(text: str, dim: int = 8) -> list:
    """A deterministic vector of a text (what a real model would return, for the tests' purpose)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim).round(6).tolist()


def last_user(body: dict) -> str:
    return body["messages"][-1]["content"]


def default_chat(body: dict):
    """Well-formed replies: llm_text objects, cluster interests, merged profiles, tag lists."""
    system, user = body["messages"][0]["content"], last_user(body)
    if "key_terms" in system:
        title = user.split("Title: ", 1)[-1]
        return json.dumps({"key_terms": [title.split()[0].lower(), "gift"], "summary": f"About {title}.",
                           "buyer_interests": ["home cooks"]})
    if "Bought (" in user:
        titles = [line[2:] for line in user.splitlines() if line.startswith("- ")]
        return json.dumps([f"likes {t.split(',')[0].lower()}" for t in titles][:4])
    if user.startswith("Interests:"):
        return json.dumps({"profile": "Profile: " + " | ".join(line[2:] for line in user.splitlines()[1:])})
    return json.dumps(["tea", "green tea"])


def scripted(replies: list):
    """A chat function answering with `replies` in order (texts or HTTP status ints); the last one repeats."""
    replies, lock = list(replies), threading.Lock()

    def chat(body: dict):
        with lock:
            return replies.pop(0) if len(replies) > 1 else replies[0]
    return chat


class FakeLLM:
    """`with FakeLLM(chat=fn, embed=fn) as server: ... server.base_url ...`.

    `chat(body)` returns the reply text, or an int HTTP status. `embed(inputs)` returns a list of
    vectors (a vector may be a list of per-token vectors), an int HTTP status, or a dict sent as is.
    Each request is answered after `delay` seconds.
    """

    def __init__(self, chat=None, embed=None, dim: int = 8, delay: float = 0.0):
        self.chat = chat or default_chat
        self.embed = embed or (lambda inputs: [fake_vector(t, dim) for t in inputs])
        self.delay = delay
        self.requests, self.auth = [], []  # (path, body), Authorization header
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.path, body))
                    server.auth.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay)
                with server.lock:
                    server.in_flight -= 1
                if self.path.endswith("/embeddings"):
                    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    result = server.embed(inputs)
                    if isinstance(result, int):
                        return self._error(result)
                    payload = result if isinstance(result, dict) else {
                        "object": "list", "model": body["model"], "usage": {"prompt_tokens": 3, "total_tokens": 3},
                        "data": [{"object": "embedding", "index": k, "embedding": v} for k, v in enumerate(result)]}
                    return self._send(200, payload)
                result = server.chat(body)
                if isinstance(result, int):
                    return self._error(result)
                self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": result}}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

            def _error(self, status):
                # a careless server echoes the Authorization header: the key must still never be written
                self._send(status, {"error": {"message": f"canned {status}; you sent {self.headers.get('Authorization')}",
                                              "type": "canned"}}, {"Retry-After": "0"} if status == 429 else {})

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def count(self, kind: str) -> int:
        """Requests of one kind so far: "chat" or "embeddings"."""
        with self.lock:
            return sum(1 for path, _ in self.requests if path.endswith("/embeddings") == (kind == "embeddings"))

    def chat_bodies(self) -> list:
        with self.lock:
            return [body for path, body in self.requests if not path.endswith("/embeddings")]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
