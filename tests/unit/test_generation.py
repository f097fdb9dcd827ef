"""The generation layer without engines: response cache, request pacing, backoff, and the API
client against a fault-injecting server on 127.0.0.1."""

import json
import random

import pyarrow as pa
import pytest

from engine.config import ApiConfig, Prices
from engine.generation.cache import CACHE_KEY, ResponseCache, cache_key, model_fingerprint
from engine.generation.openai_api import OpenAIChatUDF, RequestPacer, Secret, backoff_delay
from engine.metrics import generation_usage
from engine.records import GENERATED
from tests.fault_server import FaultServer, expected_answer

SAMPLING = json.dumps({"temperature": 0.7, "top_p": 0.95, "max_tokens": 32})


def messages(i: int) -> str:
    return json.dumps([{"role": "user", "content": f"question number {i}"}])


# -- cache --------------------------------------------------------------------------------------
def test_cache_key_changes_with_everything_that_changes_the_answer():
    base = cache_key("m", messages(1), SAMPLING, 0, None)
    assert base == cache_key("m", messages(1).replace(", ", ","), SAMPLING, 0, None)
    assert base == cache_key("m", messages(1), SAMPLING.replace(", ", ","), 0, None)
    variants = [cache_key("m2", messages(1), SAMPLING, 0, None),
                cache_key("m", messages(2), SAMPLING, 0, None),
                cache_key("m", messages(1), SAMPLING.replace("0.7", "0.0"), 0, None),
                cache_key("m", messages(1), SAMPLING, 1, None),
                cache_key("m", messages(1), SAMPLING, 0, "a+"),
                cache_key("m", messages(1), SAMPLING, 0, None, sample=1)]
    assert len({base, *variants}) == 7


def test_model_fingerprint_changes_when_a_checkpoint_is_rewritten(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"a" * 10)
    first = model_fingerprint(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"b" * 11)
    assert model_fingerprint(str(tmp_path)) != first
    assert model_fingerprint("gpt-4o-mini") == "gpt-4o-mini"


def test_cache_round_trip_and_unreadable_part_is_skipped(tmp_path):
    logs = []
    cache = ResponseCache(tmp_path / "cache", log=logs.append)
    cache.add([{"key": "k1", "output": "one", "prompt_tokens": 3, "completion_tokens": 1}])
    cache.add([{"key": "k2", "output": "two", "prompt_tokens": 4, "completion_tokens": 2}])
    (tmp_path / "cache" / "part-corrupt.parquet").write_bytes(b"PAR1 not really parquet")
    found = cache.lookup(["k1", "k2", "k3"])
    assert {k: v["output"] for k, v in found.items()} == {"k1": "one", "k2": "two"}
    assert any("part-corrupt.parquet" in line for line in logs)
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # writes leave no temporaries


def _row(key: str) -> dict:
    return {"key": key, "output": f"out {key}", "prompt_tokens": 1, "completion_tokens": 1}


def test_a_lookup_racing_a_compaction_elsewhere_still_finds_every_cached_row(tmp_path):
    """Issue 30: another process compacts while a lookup reads; the parts it merged are gone
    when the lookup gets to them, and were read as misses (regenerated, paid for again)."""
    cache = ResponseCache(tmp_path / "cache", log=lambda _: None)
    for i in range(6):
        cache.add([_row(f"k{i}")])
    other = ResponseCache(tmp_path / "cache", log=lambda _: None)  # another worker's handle
    read = cache._read
    raced = []

    def read_during_a_compaction(part, missing_ok=False):
        if not raced:  # the first read finds the other worker compacting every part
            raced.append(other.compact(other.parts()))
        return read(part, missing_ok)

    cache._read = read_during_a_compaction
    found = cache.lookup([f"k{i}" for i in range(6)])
    assert len(raced[0]) == 1  # the other worker did merge the six parts into one
    assert sorted(found) == [f"k{i}" for i in range(6)]


def test_temporary_files_of_unfinished_writes_are_removed_when_old(tmp_path):
    import os
    import time

    cache = ResponseCache(tmp_path / "cache", log=lambda _: None, compact_at=1)
    cache.add([_row("a")])
    cache.add([_row("b")])
    old = tmp_path / "cache" / ".part-x.parquet.0123.tmp"  # a worker killed mid-write
    fresh = tmp_path / "cache" / ".part-y.parquet.4567.tmp"  # a write in flight now
    old.write_bytes(b"half a parquet")
    fresh.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert sorted(cache.lookup(["a", "b"])) == ["a", "b"]  # over compact_at: compacts
    assert not old.exists() and fresh.exists()


# -- pacing and backoff ---------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_pacer_spaces_requests_by_the_tighter_limit():
    clock = FakeClock()
    pacer = RequestPacer(rpm=60, tpm=600, clock=clock, sleep=clock.sleep)  # 1 req/s, 10 tok/s
    starts = []
    for tokens in [5, 5, 20, 5]:
        pacer.acquire(tokens)
        starts.append(clock.now)
    # gaps: max(1 s, tokens/10 s) -> 1, 1, 2
    assert starts == [0.0, 1.0, 2.0, 4.0]
    pacer.settle(estimated=5, actual=25)  # 20 tokens more than reserved: 2 s more
    pacer.acquire(5)
    assert clock.now == pytest.approx(5.0 + 2.0)


def test_pacer_counts_the_gap_from_a_late_start_not_from_when_it_was_due():
    """A request whose sleep overran (a busy machine) must not let the next one start early to
    catch up: two starts closer than the gap are a burst over the limit."""
    clock = FakeClock()
    late = [0.6]  # the first sleep wakes 0.6 s late, later ones on time

    def sleep(seconds):
        clock.sleep(seconds + (late.pop() if late else 0.0))

    pacer = RequestPacer(rpm=60, tpm=None, clock=clock, sleep=sleep)  # 1 request a second
    starts = []
    for _ in range(3):
        pacer.acquire(1)
        starts.append(clock.now)
    assert starts == pytest.approx([0.0, 1.6, 2.6])


def test_backoff_grows_exponentially_with_jitter_and_respects_retry_after():
    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 100.0, rng=rng) for a in range(1, 6)]
    for attempt, d in enumerate(delays, start=1):
        assert 0.5 * 2 ** (attempt - 1) <= d <= 2 ** (attempt - 1)
    assert backoff_delay(3, 1.0, 2.5, rng=rng) <= 2.5
    assert backoff_delay(1, 1.0, 100.0, retry_after=7.0) == 7.0


# -- the API client against a misbehaving server -----------------------------------------------
def _batch(n: int) -> pa.Table:
    return pa.table({"request_id": [f"r{i}" for i in range(n)],
                     "messages": [messages(i) for i in range(n)], "sampling": [SAMPLING] * n})


def test_api_client_survives_faults_within_the_rate_limit():
    rates = {"429": 0.15, "500": 0.1, "slow": 0.1, "malformed": 0.1}
    rpm = 600
    with FaultServer(rates, slow_s=2.0, seed=1) as server:
        api = ApiConfig(base_url=server.url, api_key_env=None, requests_per_minute=rpm,
                        concurrency=6, timeout_s=1.0, max_retries=8, backoff_s=0.01,
                        backoff_max_s=0.1)
        udf = OpenAIChatUDF(api, "fake-model", key=None)
        paced = []
        acquire = udf.pacer.acquire
        udf.pacer.acquire = lambda tokens: (acquire(tokens), paced.append(tokens))
        out = udf(_batch(40))
    assert out.schema == GENERATED
    rows = out.to_pylist()
    assert [r["request_id"] for r in rows] == [f"r{i}" for i in range(40)]
    answered = [r for r in rows if not r["error"]]
    for i, r in enumerate(rows):  # every row is answered correctly or says why it failed
        if r["error"]:
            assert r["error"].startswith("failed after 9 attempt(s)"), r["error"]
        else:
            assert r["output"] == expected_answer(json.loads(messages(i))), r
            assert r["completion_tokens"] > 0
    faults = server.count() - server.count("ok")
    assert faults > 10  # the server did misbehave
    assert sum(r["attempts"] for r in rows) == server.count()  # every call accounted for
    assert sum(r["attempts"] - 1 for r in answered) + sum(
        r["attempts"] for r in rows if r["error"]) == faults
    # Every call, retries included, waited for the pacer (whose spacing the FakeClock tests
    # above pin down exactly), and the server saw no more than the limit over the run. Arrival
    # times carry the server threads' scheduling jitter on a busy machine, so the run's two
    # ends may each be off by a request.
    assert len(paced) == server.count()
    times = sorted(e["t"] for e in server.log)
    excess = (len(times) - 1) - (times[-1] - times[0]) * rpm / 60
    assert excess <= 2.0, f"request rate above the limit by {excess:.2f} requests over the run"


def test_api_client_does_not_retry_a_client_error_and_scrubs_the_key():
    key = "sk-test-DO-NOT-LEAK-4242"
    with FaultServer(api_key="another-key") as server:
        api = ApiConfig(base_url=server.url, max_retries=5, backoff_s=0.01)
        out = OpenAIChatUDF(api, "m", key=Secret(key))(_batch(2))
    rows = out.to_pylist()
    assert server.count() == 2  # 401 is final: no retries
    assert all(r["attempts"] == 1 and "HTTP 401" in r["error"] for r in rows)
    assert server.log[0]["auth"] == f"Bearer {key}"  # the key was sent...
    assert all(key not in r["error"] for r in rows)  # ...but the echo of it was scrubbed
    assert "***" in rows[0]["error"]
    assert key not in repr(Secret(key)) and key not in str(Secret(key))


def test_api_client_stores_answers_as_they_arrive_and_never_a_failure(tmp_path, monkeypatch):
    # Answers reach the cache while the batch is still running, not only when it returns: a
    # killed driver or worker then costs only the requests in flight.
    monkeypatch.setattr(OpenAIChatUDF, "STORE_EVERY_S", 0.0)
    cache_dir = tmp_path / "cache"
    with FaultServer({"429": 0.3}, seed=3) as server:
        api = ApiConfig(base_url=server.url, api_key_env=None, concurrency=2, max_retries=0)
        batch = _batch(12)
        batch = batch.append_column(CACHE_KEY, pa.array([f"key-{i}" for i in range(12)]))
        out = OpenAIChatUDF(api, "m", key=None, cache_dir=str(cache_dir))(batch)
    rows = out.to_pylist()
    stored = ResponseCache(cache_dir).lookup([f"key-{i}" for i in range(12)])
    answered = {f"key-{i}" for i, r in enumerate(rows) if not r["error"]}
    assert 0 < len(answered) < 12  # some 429s, not retried: failures
    assert set(stored) == answered  # every answer stored, no failure
    assert all(stored[f"key-{i}"]["output"] == r["output"]
               for i, r in enumerate(rows) if not r["error"])
    assert len(ResponseCache(cache_dir).parts()) > 1  # stored while running, part by part


def test_generation_usage_counts_tokens_failures_retries_and_cost():
    rows = [{"request_id": "a", "output": "x", "prompt_tokens": 100, "completion_tokens": 10,
             "error": "", "cached": True, "attempts": 0, "replica": "cache"},
            {"request_id": "b", "output": "y", "prompt_tokens": 200, "completion_tokens": 20,
             "error": "", "cached": False, "attempts": 3, "replica": "api"},
            {"request_id": "c", "output": "", "prompt_tokens": 0, "completion_tokens": 0,
             "error": "failed after 7 attempt(s): HTTP 500", "cached": False, "attempts": 7,
             "replica": "api"}]
    usage = generation_usage(pa.Table.from_pylist(rows, schema=GENERATED),
                             Prices(prompt_per_million=1.0, completion_per_million=10.0))
    assert usage == {"requests": 3, "cached": 1, "failed": 1, "retries": 8,
                     "prompt_tokens": 300, "completion_tokens": 30,
                     "cost_usd": pytest.approx((300 * 1.0 + 30 * 10.0) / 1e6)}
    assert generation_usage(pa.Table.from_pylist(rows, schema=GENERATED), None)["cost_usd"] is None
