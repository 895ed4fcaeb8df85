"""Load on a real `tetra serve`: 1, 4, 16 and 64 concurrent streams all
complete; batch invariance on the exact path; and a soak of 1000 concurrent
streaming connections (slow readers and abrupt disconnects among them) that
ends with every request completed or cleanly cancelled, every KV block free
and the server's RSS flat. Bounded in count and time; loopback only."""
import asyncio
import json
import random

import httpx
import pytest

from conftest import Server


async def stream_completion(client, url, body, read_delay=0.0, drop_after=None):
    """Streams one completion; returns (text, finish_reason, saw_done), or None when dropped on purpose."""
    text, finish, done, chunks = "", None, False, 0
    async with client.stream("POST", url, json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            payload = line[len("data: "):]
            if payload == "[DONE]":
                done = True
                break
            chunk = json.loads(payload)
            for choice in chunk["choices"]:
                text += choice.get("text") or ""
                finish = choice.get("finish_reason") or finish
            chunks += 1
            if drop_after is not None and chunks >= drop_after:
                return None  # leaving the context manager closes the connection mid-stream
            if read_delay:
                await asyncio.sleep(read_delay)
    return text, finish, done


async def run_streams(base_url, bodies, read_delays=None, drops=None, limit=2000):
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0)) as client:
        tasks = [stream_completion(client, base_url + "/v1/completions", body,
                                   (read_delays or {}).get(i, 0.0), (drops or {}).get(i))
                 for i, body in enumerate(bodies)]
        return await asyncio.gather(*tasks)


@pytest.fixture(scope="module")
def load_server():
    s = Server("--max-num-seqs", "64")
    yield s
    assert s.stop() == 0, s.output()


@pytest.mark.parametrize("concurrency", [1, 4, 16, 64])
def test_concurrent_streams_all_complete(load_server, concurrency):
    bodies = [{"prompt": f"Story {i}: once upon a time", "max_tokens": 16, "temperature": 0.7, "seed": i}
              for i in range(concurrency)]
    results = asyncio.run(run_streams(load_server.base_url, bodies))
    for text, finish, done in results:
        assert done and finish in ("length", "stop")
    load_server.wait_idle()


def test_batch_invariance_on_the_exact_path():
    s = Server("--weights", "reference")
    try:
        target = {"prompt": "The three primary colours are", "max_tokens": 24, "temperature": 0}
        alone = asyncio.run(run_streams(s.base_url, [target]))[0][0]
        others = [{"prompt": f"Unrelated prompt {i} about {'cats' if i % 2 else 'ships'}", "max_tokens": 24 + i,
                   "temperature": 0} for i in range(16)]
        busy = asyncio.run(run_streams(s.base_url, others[:8] + [target] + others[8:]))
        assert busy[8][0] == alone
    finally:
        assert s.stop() == 0


def test_soak_of_1000_streaming_connections():
    s = Server("--max-num-seqs", "64", "--max-connections", "2048")
    try:
        rng = random.Random(5)
        rss = []
        for round_index in range(2):
            n = 1000
            bodies = [{"prompt": f"Request {i}: the", "max_tokens": rng.randint(2, 8), "temperature": 0.8, "seed": i}
                      for i in range(n)]
            slow = {i: 0.05 for i in range(0, n, 10)}         # 100 slow readers
            drops = {i: 1 for i in range(5, n, 10)}           # 100 abrupt disconnects after one chunk
            results = asyncio.run(run_streams(s.base_url, bodies, slow, drops))
            for i, result in enumerate(results):
                if i in drops:
                    continue
                assert result is not None
                text, finish, done = result
                assert done and finish in ("length", "stop"), (i, result)
            m = s.wait_idle(timeout=120)
            rss.append(s.rss_kib())
            finished = sum(v for k, v in m.items() if k.startswith("tetra:request_success_total"))
            assert finished >= (round_index + 1) * n, m
        # Flat: the second thousand did not grow the process beyond noise.
        assert rss[1] <= rss[0] * 1.10 + 16 * 1024, rss
        assert s.proc.poll() is None
    finally:
        assert s.stop() == 0, s.output()
