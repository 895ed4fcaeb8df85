"""Prefill/decode disaggregation across real processes (doc/disaggregation.md).

A `--role prefill` and a `--role decode` instance of `tetra serve`, and a
`--role both` instance as the oracle. Requests go to the decode instance
with the X-Tetra-Prefill header the router sets: their prompts are
prefilled on the prefill instance, whose KV travels over the KV transport. Greedy output equals the single instance's;
a prefill instance that is gone or dies mid-transfer costs a local prefill,
never an answer; KV is free on both sides at the end.

Prompt lengths avoid multiples of the KV block (64): there the last prompt
token completes a block, and with the FP8 cache a single instance computing
the prompt in one pass rounds that block differently (doc/disaggregation.md,
"What equals what").
"""
import concurrent.futures
import signal
import time

import httpx
import pytest

from conftest import Server


def prompt_ids(n, seed=0):
    return [(i * 37 + seed * 101 + 11) % 4000 + 100 for i in range(n)]


def complete(server, prompt, max_tokens=16, prefill=None, timeout=120):
    headers = {"X-Tetra-Prefill": prefill} if prefill else {}
    r = httpx.post(server.base_url + "/v1/completions", headers=headers, timeout=timeout,
                   json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def wait_idle(server, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.metric("tetra:num_requests_running") == 0 and server.metric("tetra:kv_cache_usage_perc") == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"not idle: {server.metrics()}")


@pytest.fixture(scope="module")
def cluster():
    prefill = Server("--role", "prefill", threads=1)
    decode = Server("--role", "decode", threads=1)
    single = Server(threads=1)
    yield prefill, decode, single
    for s in (decode, prefill, single):
        s.stop()


def exported(prefill):
    return sum(v for k, v in prefill.metrics().items()
               if k.startswith("tetra:request_success_total") and 'finished_reason="length"' in k)


def test_greedy_through_prefill_and_decode_equals_one_instance(cluster):
    prefill, decode, single = cluster
    url = prefill.base_url
    before = exported(prefill)
    # Shorter than one block (64 tokens), exactly one block (the prefill
    # instance computes every token but the last), several blocks and an
    # open one, and prompts that start alike (prefix-cache hits on both
    # sides: the decode side moves only what it lacks, the prefill side
    # computes only what it lacks).
    lengths = [10, 65, 150, 301, 130]
    for n in lengths:
        p = prompt_ids(n, seed=0)
        assert complete(decode, p, prefill=url) == complete(single, p), f"prompt of {n}"
    assert exported(prefill) - before == 5  # every prompt went to the prefill instance
    assert prefill.metric("tetra:prompt_tokens_total") >= 9 + 64 + 149 + 300  # exports count their prompts
    assert prefill.metric("tetra:prefix_cache_hits_total") > 0
    sent = prefill.metric("tetra:kv_transfer_bytes_total")
    assert sent > 0 and sent == decode.metric("tetra:kv_transfer_bytes_total")
    ok = lambda s: sum(v for k, v in s.metrics().items() if k.startswith("tetra:kv_transfers_total") and "ok" in k)
    assert ok(prefill) == ok(decode) == 5
    assert decode.metric("tetra:prefix_cache_hits_total") > 0
    # One transfer time per transfer on each side; the decode side's (the
    # whole remote prefill) is the longer.
    assert prefill.metric("tetra:kv_transfer_seconds_count") == decode.metric("tetra:kv_transfer_seconds_count") == 5
    assert decode.metric("tetra:kv_transfer_seconds_sum") > prefill.metric("tetra:kv_transfer_seconds_sum") > 0
    wait_idle(decode)
    wait_idle(prefill)
    for s in (decode, prefill):
        for gauge in ("num_requests_awaiting_kv", "num_requests_holding_kv", "num_prompt_tokens_pending"):
            assert s.metric("tetra:" + gauge) == 0, gauge


def test_chat_and_streaming_through_the_decode_instance(cluster):
    prefill, decode, single = cluster
    messages = [{"role": "user", "content": "Tell me about the sea. " * 12}]
    body = {"messages": messages, "max_tokens": 12, "temperature": 0}
    headers = {"X-Tetra-Prefill": prefill.base_url}
    want = httpx.post(single.base_url + "/v1/chat/completions", json=body, timeout=60).json()
    got = httpx.post(decode.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=60).json()
    assert got["choices"][0]["message"]["content"] == want["choices"][0]["message"]["content"]
    text = ""
    with httpx.stream("POST", decode.base_url + "/v1/chat/completions", headers=headers, timeout=60,
                      json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                import json
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content") or ""
    assert text == want["choices"][0]["message"]["content"]


def test_an_unreachable_prefill_instance_costs_a_local_prefill(cluster):
    prefill, decode, single = cluster
    p = prompt_ids(200, seed=3)
    assert complete(decode, p, prefill="http://127.0.0.1:9") == complete(single, p)
    assert complete(decode, prompt_ids(100, seed=4), prefill="not a url") == complete(single, prompt_ids(100, seed=4))
    wait_idle(decode)


def test_a_client_that_leaves_mid_prefill_frees_the_kv_on_both_sides(cluster):
    prefill, decode, single = cluster
    aborted = lambda s: sum(v for k, v in s.metrics().items()
                            if k.startswith("tetra:request_success_total") and 'finished_reason="abort"' in k)
    before = aborted(decode)
    body = {"prompt": prompt_ids(1500, seed=70), "max_tokens": 32, "temperature": 0, "stream": True}
    with httpx.stream("POST", decode.base_url + "/v1/completions", json=body, timeout=60,
                      headers={"X-Tetra-Prefill": prefill.base_url}):
        time.sleep(0.3)  # the prompt is on the prefill instance, its KV on the way
    # Gone: the decode side aborts and cancels the transfer; the prefill side's
    # export fails at its end and frees its blocks.
    wait_idle(decode)
    wait_idle(prefill, timeout=60)
    assert aborted(decode) == before + 1
    p = prompt_ids(120, seed=71)
    assert complete(decode, p, prefill=prefill.base_url) == complete(single, p)
    wait_idle(decode)
    wait_idle(prefill)


def first_logprob(server, prompt, prefill=None):
    headers = {"X-Tetra-Prefill": prefill} if prefill else {}
    r = httpx.post(server.base_url + "/v1/completions", headers=headers, timeout=120,
                   json={"prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 1})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["logprobs"]["token_logprobs"][0]


def test_kv_of_another_dtype_is_converted_not_refused(cluster):
    # Heterogeneous pools: a prefill instance with a BF16 KV cache beside the
    # FP8 decode instance. Full blocks are converted to the decode side's
    # format on the way (exactness: tests/model/kv_cache_test.cc); the
    # request's first token comes out as the FP8 single instance computes
    # it, to within BF16-against-FP8 rounding of the prompt's KV.
    _, decode, single = cluster
    prefill = Server("--role", "prefill", "--kv-cache", "bf16", threads=1)
    try:
        ok = lambda s: sum(v for k, v in s.metrics().items() if k.startswith("tetra:kv_transfers_total") and "ok" in k)
        before, fallbacks = ok(decode), decode.metric("tetra:kv_transfer_fallbacks_total")
        received = decode.metric("tetra:kv_transfer_bytes_total")
        for seed in (30, 31):
            p = prompt_ids(200, seed=seed)
            assert abs(first_logprob(decode, p, prefill.base_url) - first_logprob(single, p)) < 0.3
        assert ok(decode) - before == 2 and ok(prefill) == 2
        assert decode.metric("tetra:kv_transfer_fallbacks_total") == fallbacks
        # What arrived is in the decode side's layout (BF16 would be twice
        # the FP8 bytes): per request and layer, 3 full FP8 blocks (keys and
        # values of 3 KV heads x 64 positions x 64 dims, and their scales),
        # then the open block of positions 192-198, f32 in every format.
        full = 3 * (2 * 3 * 64 * 64 + 2 * 3 * 4)
        open_block = 2 * 3 * 64 * 64 * 4
        assert decode.metric("tetra:kv_transfer_bytes_total") - received == 2 * 30 * (full + open_block)
        wait_idle(decode)
        wait_idle(prefill)
    finally:
        prefill.stop()


def test_a_prefill_instance_drains_and_exits_promptly_on_sigterm(cluster):
    _, decode, single = cluster
    prefill = Server("--role", "prefill", threads=1)
    try:
        for seed in (20, 21):
            p = prompt_ids(150, seed=seed)
            assert complete(decode, p, prefill=prefill.base_url) == complete(single, p)
        assert exported(prefill) == 2
        wait_idle(prefill)
    finally:
        start = time.monotonic()
        assert prefill.stop() == 0
    # Nothing is in flight: no drain wait (a miscounted call once made it 30 s).
    assert time.monotonic() - start < 10, prefill.output()
    assert "still running" not in prefill.output()


def test_a_prefill_instance_killed_mid_load_loses_no_request():
    prefill = Server("--role", "prefill", threads=1)
    decode = Server("--role", "decode", "--disagg-min-prompt-tokens", "64", threads=1)
    try:
        prompts = [prompt_ids(250 + 7 * i, seed=10 + i) for i in range(8)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(complete, decode, p, 24, prefill.base_url) for p in prompts]
            time.sleep(0.5)
            prefill.proc.send_signal(signal.SIGKILL)
            texts = [f.result(timeout=180) for f in futures]
        assert all(isinstance(t, str) and t for t in texts)
        # New requests still work: prefilled locally while the prefill instance is gone.
        assert complete(decode, prompt_ids(180, seed=99), prefill=prefill.base_url)
        wait_idle(decode)
    finally:
        decode.stop()
        prefill.proc.wait(timeout=10)


def router(*args):
    """`tetra router` as a Server (it answers /health once a decode instance is healthy)."""
    from conftest import TETRA, free_port
    import subprocess
    port = free_port()
    log = open(f"/tmp/tetra-router-{port}.log", "wb")
    proc = subprocess.Popen([TETRA, "router", "--port", str(port), "--health-interval", "0.2", *args],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("tetra router did not become healthy")


def test_the_router_is_one_openai_server_in_front_of_both_pools(cluster):
    import openai
    prefill, decode, single = cluster
    proc, base = router("--prefill", prefill.base_url, "--decode", decode.base_url)
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        direct = openai.OpenAI(base_url=single.base_url + "/v1", api_key="unused")
        name = client.models.list().data[0].id
        for n in (90, 222):
            p = prompt_ids(n, seed=20 + n)
            got = client.completions.create(model=name, prompt=p, max_tokens=12, temperature=0).choices[0].text
            want = direct.completions.create(model=name, prompt=p, max_tokens=12, temperature=0).choices[0].text
            assert got == want
        messages = [{"role": "user", "content": "Name three colours. " * 8}]
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=name, messages=messages, max_tokens=10, temperature=0, stream=True))
        want = direct.chat.completions.create(model=name, messages=messages, max_tokens=10,
                                              temperature=0).choices[0].message.content
        assert streamed == want
        # Streamed as generated, not buffered: the first and last events arrive apart.
        times = []
        with httpx.stream("POST", base + "/v1/completions", timeout=60,
                          json={"prompt": prompt_ids(100, seed=7), "max_tokens": 32, "temperature": 0,
                                "ignore_eos": True, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    times.append(time.perf_counter())
        assert len(times) >= 16 and times[-1] - times[0] > 0.05, (len(times), times[-1] - times[0])
        # Errors come through as the decode instance's own.
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model=name, prompt="x", max_tokens=-1)
        metrics = httpx.get(base + "/metrics").text
        assert "tetra:router_prefill_assigned_total 5" in metrics, metrics
        # The chat page, as a single instance serves it.
        page = httpx.get(base + "/")
        assert page.status_code == 200 and page.text == httpx.get(single.base_url + "/").text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_the_router_sends_a_shared_prefix_to_one_prefill_instance(cluster):
    import openai
    first, decode, _ = cluster
    second = Server("--role", "prefill", threads=1)
    proc, base = router("--prefill", first.base_url, "--prefill", second.base_url, "--decode", decode.base_url)
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        before = [exported(first), exported(second)]
        system = "You are a careful assistant who answers in one short sentence. " * 6
        for question in ("What is red?", "What is blue?", "What is green?", "What is gold?"):
            client.chat.completions.create(model="", max_tokens=4, temperature=0,
                                           messages=[{"role": "system", "content": system},
                                                     {"role": "user", "content": question}])
        counts = sorted([exported(first) - before[0], exported(second) - before[1]])
        assert counts == [0, 4], counts  # one requests at a time: the prefix decides, every time the same
        holder = first if exported(first) - before[0] == 4 else second
        assert holder.metric("tetra:prefix_cache_hits_total") > 0
        wait_idle(second)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        second.stop()


def test_the_router_without_a_live_decode_instance_answers_503_not_a_hang():
    prefill = Server("--role", "prefill", threads=1)
    decode = Server("--role", "decode", threads=1)
    proc, base = router("--prefill", prefill.base_url, "--decode", decode.base_url)
    try:
        decode.proc.send_signal(signal.SIGKILL)
        decode.proc.wait(timeout=10)
        r = httpx.post(base + "/v1/completions", json={"prompt": "Hello", "max_tokens": 4}, timeout=30)
        assert r.status_code in (502, 503), r.text
        assert "error" in r.json()
        deadline = time.time() + 10
        while httpx.get(base + "/health", timeout=5).status_code != 503:
            assert time.time() < deadline, "the dead decode instance stayed in rotation"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        prefill.stop()
