"""Scale: an augment stage's teacher requests through the real pipeline and response cache,
against the same requests sent by a plain client, both to a local server that answers at once.

    python -m benchmarks.scale --requests 10000,100000 --json results/scale.json

The server (OpenAI-compatible chat completions, a fixed short answer, its own process) is as
fast as this machine lets a Python server be, so what is measured is the engine's own cost per
request: Ray Data blocks, the API client actors, the response cache (each answer written as
it arrives, looked up before a stage). The baseline is a thread pool with as many requests in
flight as the pipeline has (`replicas` x `concurrency`), posting each request with httpx and
keeping nothing: `ratio` is the pipeline's requests/s over the baseline's. For each size, in a
process of its own: wall time and requests/s of both, the driver's peak memory above its start
(sampled every 20 ms) while the stage's answers stream to parquet parts a window at a time
(`GenerationPipeline.stream`), the time and peak of the same stage again with every answer in
the cache (the lookup), and the cache's parts before and after that lookup (it compacts past 64
small parts). The request table itself is built before the measurement, as a strategy builds
a stage's requests. Neither cost per request (`engine_us_per_request`) nor the driver's peak
may grow with the stage's size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import report
from engine.config import ApiConfig, TeacherConfig
from engine.generation.cache import ResponseCache
from engine.generation.backend import build_generator
from engine.generation.pipeline import WINDOW_ROWS
from engine.local_ray import init_local
from engine.metrics import add_usage, generation_usage
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
    """The process's peak resident memory above where it was at the start, sampled; and the
    same for its private part (resident less shared pages: Ray's object store is shared
    memory the driver maps when it puts a block or reads one)."""

    def __init__(self, every_s: float = 0.02):
        import psutil

        self.process, self.every_s = psutil.Process(), every_s
        info = self.process.memory_info()
        self.base = self.peak = info.rss
        self.private_base = self.private_peak = info.rss - info.shared
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            info = self.process.memory_info()
            self.peak = max(self.peak, info.rss)
            self.private_peak = max(self.private_peak, info.rss - info.shared)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2 ** 20

    @property
    def private_mb(self) -> float:
        return (self.private_peak - self.private_base) / 2 ** 20


def run_engine(url: str, table: pa.Table, cfg: TeacherConfig, cache_dir: str,
               answers_dir: str, window_rows: int) -> dict:
    """The stage through the pipeline's stream, each window written to a parquet part as it
    comes (as a stage writes its answers), then the same stage again from the cache."""
    cache = ResponseCache(cache_dir, log=lambda m: print(m, flush=True))
    pipeline = build_generator(cfg, seed=0, cache=cache, log=lambda m: None)
    pipeline.window_rows = window_rows or table.num_rows
    with PeakMemory() as memory:
        start = time.perf_counter()
        usage = write_parts(pipeline.stream(table, cfg.model, "augment"), answers_dir)
        seconds = time.perf_counter() - start
    if usage["failed"] or usage["requests"] != table.num_rows:
        raise SystemExit(f"{usage['failed']} of {table.num_rows} requests failed "
                         f"({usage['requests']} answered)")
    parts = len(cache.parts())
    with PeakMemory() as lookup_memory:
        start = time.perf_counter()
        again = write_parts(pipeline.stream(table, cfg.model, "augment"), answers_dir + "-again")
        cached_seconds = time.perf_counter() - start
    if again["cached"] != table.num_rows:
        raise SystemExit("the second pass generated rows the cache should have answered")
    return {"seconds": seconds, "driver_peak_mb": memory.mb,
            "driver_private_peak_mb": memory.private_mb, "cached_seconds": cached_seconds,
            "cached_driver_peak_mb": lookup_memory.mb, "cache_parts_written": parts,
            "cache_parts_after_lookup": len(cache.parts())}


def write_parts(windows, folder: str) -> dict:
    """Each window of answers to its own parquet part in `folder`; their usage, summed."""
    os.makedirs(folder, exist_ok=True)
    usage = None
    for i, window in enumerate(windows):
        pq.write_table(window, os.path.join(folder, f"part-{i:05d}.parquet"))
        counted = generation_usage(window, prices=None)
        usage = counted if usage is None else add_usage(usage, counted)
    return usage


def measure(n: int, url: str, args: argparse.Namespace) -> dict:
    """One stage size, in a process of its own (see main)."""
    import ray

    cfg = TeacherConfig(model="bench", replicas=args.replicas, batch_size=args.batch_size,
                        api=ApiConfig(base_url=url, concurrency=args.concurrency,
                                      max_retries=2))
    init_local(include_dashboard=False, log_to_driver=False)
    try:
        table = requests(n, cfg)
        with tempfile.TemporaryDirectory() as tmp:
            engine = run_engine(url, table, cfg, os.path.join(tmp, "cache"),
                                os.path.join(tmp, "answers"), args.window_rows)
        plain = (run_plain(url, table, args.replicas * args.concurrency)
                 if n <= args.plain_max else None)
    finally:
        ray.shutdown()
    return {
        "requests": n,
        "plain_seconds": round(plain, 2) if plain else None,
        "plain_requests_per_s": round(n / plain, 1) if plain else None,
        "engine_seconds": round(engine["seconds"], 2),
        "engine_requests_per_s": round(n / engine["seconds"], 1),
        "ratio": round(plain / engine["seconds"], 3) if plain else None,
        "engine_us_per_request": round(engine["seconds"] / n * 1e6, 1),
        "driver_peak_mb": round(engine["driver_peak_mb"], 1),
        "driver_private_peak_mb": round(engine["driver_private_peak_mb"], 1),
        "cached_lookup_seconds": round(engine["cached_seconds"], 2),
        "cached_driver_peak_mb": round(engine["cached_driver_peak_mb"], 1),
        "cache_parts_written": engine["cache_parts_written"],
        "cache_parts_after_lookup": engine["cache_parts_after_lookup"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--requests", default="10000,100000",
                        help="comma-separated stage sizes (teacher requests)")
    parser.add_argument("--replicas", type=int, default=2, help="API client actors")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight each")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per Ray Data batch")
    parser.add_argument("--plain-max", type=int, default=10 ** 12,
                        help="sizes above this skip the plain client (it took 34 minutes "
                             "for 1,000,000 requests on 2 cores); their ratio is empty")
    parser.add_argument("--window-rows", type=int, default=WINDOW_ROWS,
                        help="requests the pipeline answers at a time (0: the whole stage at "
                             "once, as before windows)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.requests.split(",")]

    server, url = start_server()
    rows = []
    try:
        for n in sizes:
            # A fresh process per size: memory a process has freed is reused before its
            # resident size grows, so a size measured after a bigger run (or after the plain
            # client) would read low.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as one:
                row = one.submit(measure, n, url, args).result()
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        server.terminate()
    report({"replicas": args.replicas, "concurrency": args.concurrency,
            "batch_size": args.batch_size, "window_rows": args.window_rows,
            "cpu_count": os.cpu_count(), "sizes": rows}, args.json)


if __name__ == "__main__":
    main()
