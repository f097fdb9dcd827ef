"""Scale: an augment stage's teacher requests through the real pipeline and response cache,
against the same requests sent by a plain client, both to a local server that answers at once.

    python -m benchmarks.scale --requests 10000,100000 --json results/scale.json

The server (OpenAI-compatible chat completions, a fixed short answer, its own process) is as
fast as this machine lets a Python server be, so what is measured is the engine's own cost per
request: Ray Data blocks, the API client actors, the response cache (each answer written as
it arrives, looked up before a stage). The baseline is a thread pool with as many requests in
flight as the pipeline has (`replicas` x `concurrency`), posting each request with httpx and
keeping nothing: `ratio` is the pipeline's requests/s over the baseline's. For each size:
wall time and requests/s of both, the driver's peak memory above its start (sampled every
20 ms), the time of the same stage again with every answer in the cache (the lookup), and the
cache's parts before and after that lookup (it compacts past 64). Cost per request must not
grow with the stage's size: compare `engine_us_per_request` across sizes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa

from benchmarks import report
from engine.config import ApiConfig, TeacherConfig
from engine.generation.cache import ResponseCache
from engine.generation.backend import build_generator
from engine.sampling import sampling_params, to_json

ANSWER = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Text: ok"}}],
                     "usage": {"prompt_tokens": 12, "completion_tokens": 3}}).encode()


class _Instant(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections, as with real APIs

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args):  # one line per request would be the benchmark
        pass


def _serve(port: multiprocessing.Value) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Instant)
    server.daemon_threads = True
    port.value = server.server_address[1]
    server.serve_forever()


def start_server() -> tuple[multiprocessing.Process, str]:
    port = multiprocessing.Value("i", 0)
    process = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    process.start()
    while not port.value:
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port.value}/v1"


def requests(n: int, cfg: TeacherConfig) -> pa.Table:
    sampling = to_json(sampling_params(cfg))
    return pa.table({
        "request_id": [f"r{i}" for i in range(n)],
        "messages": [json.dumps([{"role": "user", "content": f"Write an example like #{i}."}])
                     for i in range(n)],
        "sampling": [sampling] * n})


def run_plain(url: str, table: pa.Table, in_flight: int) -> float:
    """Seconds for a thread pool to post every request and read each answer."""
    import httpx

    client = httpx.Client(limits=httpx.Limits(max_connections=in_flight), timeout=60)
    messages = table.column("messages").to_pylist()

    def post(m: str) -> None:
        resp = client.post(url + "/chat/completions",
                           json={"model": "bench", "messages": json.loads(m)})
        resp.json()["choices"][0]["message"]["content"]

    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(post, messages))
    seconds = time.perf_counter() - start
    client.close()
    return seconds


class PeakMemory:
    """The process's peak resident memory above where it was at the start, sampled."""

    def __init__(self, every_s: float = 0.02):
        import psutil

        self.process, self.every_s = psutil.Process(), every_s
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2 ** 20


def run_engine(url: str, table: pa.Table, cfg: TeacherConfig, cache_dir: str) -> dict:
    cache = ResponseCache(cache_dir, log=lambda m: print(m, flush=True))
    pipeline = build_generator(cfg, seed=0, cache=cache, log=lambda m: None)
    with PeakMemory() as memory:
        start = time.perf_counter()
        out = pipeline(table, cfg.model, "augment")
        seconds = time.perf_counter() - start
    failed = [e for e in out.column("error").to_pylist() if e]
    if failed:
        raise SystemExit(f"{len(failed)} of {table.num_rows} requests failed: {failed[0]}")
    parts = len(cache.parts())
    start = time.perf_counter()
    again = pipeline(table, cfg.model, "augment")
    cached_seconds = time.perf_counter() - start
    if not all(again.column("cached").to_pylist()):
        raise SystemExit("the second pass generated rows the cache should have answered")
    return {"seconds": seconds, "driver_peak_mb": memory.mb, "cached_seconds": cached_seconds,
            "cache_parts_written": parts, "cache_parts_after_lookup": len(cache.parts())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--requests", default="10000,100000",
                        help="comma-separated stage sizes (teacher requests)")
    parser.add_argument("--replicas", type=int, default=2, help="API client actors")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight each")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per Ray Data batch")
    args = parser.parse_args()
    sizes = [int(s) for s in args.requests.split(",")]

    import ray

    server, url = start_server()
    cfg = TeacherConfig(model="bench", replicas=args.replicas, batch_size=args.batch_size,
                        api=ApiConfig(base_url=url, concurrency=args.concurrency,
                                      max_retries=2))
    ray.init(address="local", num_cpus=max(8, os.cpu_count() or 1), include_dashboard=False,
             log_to_driver=False)
    rows = []
    try:
        for n in sizes:
            table = requests(n, cfg)
            plain = run_plain(url, table, args.replicas * args.concurrency)
            with tempfile.TemporaryDirectory() as cache_dir:
                engine = run_engine(url, table, cfg, cache_dir)
            row = {
                "requests": n,
                "plain_seconds": round(plain, 2),
                "plain_requests_per_s": round(n / plain, 1),
                "engine_seconds": round(engine["seconds"], 2),
                "engine_requests_per_s": round(n / engine["seconds"], 1),
                "ratio": round(plain / engine["seconds"], 3),
                "engine_us_per_request": round(engine["seconds"] / n * 1e6, 1),
                "driver_peak_mb": round(engine["driver_peak_mb"], 1),
                "cached_lookup_seconds": round(engine["cached_seconds"], 2),
                "cache_parts_written": engine["cache_parts_written"],
                "cache_parts_after_lookup": engine["cache_parts_after_lookup"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        ray.shutdown()
        server.terminate()
    report({"replicas": args.replicas, "concurrency": args.concurrency,
            "batch_size": args.batch_size, "cpu_count": os.cpu_count(), "sizes": rows},
           args.json)


if __name__ == "__main__":
    main()
