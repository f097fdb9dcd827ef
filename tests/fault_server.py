"""An OpenAI-compatible chat server on 127.0.0.1 that misbehaves on purpose. Tests only.

At set rates (from a seeded RNG) it answers 429 (with Retry-After), 500, a response slower than
the client's time-out, or a 200 whose body is not JSON; otherwise a well-formed completion
whose text is a pure function of the request. Every request it receives is logged with its
arrival time and what it answered, so a test can count retries and measure the request rate.
Error bodies echo the Authorization header, as careless real servers do, so a test can check
that the client never stores them unscrubbed.
"""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def expected_answer(messages: list[dict]) -> str:
    return "echo: " + messages[-1]["content"][:40]


class FaultServer:
    def __init__(self, rates: dict[str, float] | None = None, slow_s: float = 1.0,
                 seed: int = 0, api_key: str | None = None, answer=expected_answer,
                 delay_s: float = 0.0):
        """answer: messages -> the completion text of a well-formed answer; delay_s: how long
        each well-formed answer takes."""
        self.rates = rates or {}
        self.slow_s, self.api_key = slow_s, api_key
        self.answer, self.delay_s = answer, delay_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        # {"t": arrival, "outcome", "auth": header, "prompt": last message, "body": request}
        self.log: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FaultServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, outcome: str | None = None) -> int:
        return sum(1 for e in self.log if outcome is None or e["outcome"] == outcome)

    def _pick(self, auth: str, prompt: str, body: dict | None = None) -> str:
        with self.lock:
            if self.api_key is not None and auth != f"Bearer {self.api_key}":
                outcome = "unauthorized"
            else:
                roll, outcome = self.rng.random(), "ok"
                for name, rate in self.rates.items():
                    if roll < rate:
                        outcome = name
                        break
                    roll -= rate
            self.log.append({"t": time.monotonic(), "outcome": outcome, "auth": auth,
                             "prompt": prompt, "body": body})
            return outcome

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization", "")
                outcome = server._pick(auth, body["messages"][-1]["content"], body)
                try:
                    if outcome == "ok":
                        time.sleep(server.delay_s)
                        text = server.answer(body["messages"])
                        self._send(200, json.dumps({
                            "id": "x", "object": "chat.completion", "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                "role": "assistant", "content": text}}],
                            "usage": {"prompt_tokens": len(json.dumps(body["messages"])) // 4,
                                      "completion_tokens": len(text.split())}}))
                    elif outcome == "429":
                        self._send(429, f'{{"error": "rate limited ({auth})"}}',
                                   {"Retry-After": "0.05"})
                    elif outcome == "500":
                        self._send(500, f'{{"error": "internal error for {auth}"}}')
                    elif outcome == "slow":
                        time.sleep(server.slow_s)
                        self._send(200, '{"choices": []}')
                    elif outcome == "malformed":
                        self._send(200, '{"choices": [{"message": ')
                    elif outcome == "unauthorized":
                        self._send(401, f'{{"error": "Incorrect API key provided: {auth}"}}')
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (time-out); nothing to answer

            def _send(self, status: int, text: str, headers: dict | None = None):
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler
