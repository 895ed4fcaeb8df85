"""`tetra serve` through the official openai client: completions, chat,
streaming, n > 1, stop strings, logprobs, seeds, every error case, client
disconnects; greedy output equals `tetra generate`'s for the same precision."""
import json
import math
import socket
import threading
import time

import httpx
import openai
import pytest

from conftest import run_generate

PROMPT = "The capital of France is"


def model_name(client):
    models = client.models.list().data
    assert len(models) == 1
    return models[0].id


def test_health_models_and_metrics(server, client):
    r = httpx.get(server.base_url + "/health")
    assert r.status_code == 200
    models = client.models.list().data
    assert len(models) == 1 and models[0].object == "model"
    text = httpx.get(server.base_url + "/metrics").text
    for name in ("tetra:num_requests_running", "tetra:num_requests_waiting", "tetra:kv_cache_usage_perc",
                 "tetra:prefix_cache_queries_total", "tetra:prefix_cache_hits_total", "tetra:prompt_tokens_total",
                 "tetra:generation_tokens_total", "tetra:num_preemptions_total",
                 "tetra:time_to_first_token_seconds_bucket", "tetra:inter_token_latency_seconds_bucket",
                 "tetra:e2e_request_latency_seconds_bucket", "tetra:request_queue_time_seconds_bucket"):
        assert name in text, name


def test_greedy_completion_equals_tetra_generate(server, client):
    # The same precision (the default: W4A8 + FP8 KV) and the same greedy decoding.
    echoed = run_generate("-m", server.model, "-p", PROMPT, "-n", "24", "--temperature", "0")
    assert echoed.startswith(PROMPT)
    want = echoed[len(PROMPT):]
    got = client.completions.create(model=model_name(client), prompt=PROMPT, max_tokens=24, temperature=0)
    assert got.choices[0].text == want
    assert got.choices[0].finish_reason in ("length", "stop")
    assert got.usage.completion_tokens <= 24
    assert got.usage.prompt_tokens > 0
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens
    assert got.object == "text_completion"


def test_greedy_chat_equals_tetra_generate_chat(server, client):
    question = "What is the capital of France?"
    want = run_generate("-m", server.model, "--chat", "-p", question, "-n", "20", "--temperature", "0")
    got = client.chat.completions.create(model=model_name(client), messages=[{"role": "user", "content": question}],
                                         max_tokens=20, temperature=0)
    assert got.object == "chat.completion"
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want


def test_streaming_equals_the_whole_answer_and_reports_usage(client):
    name = model_name(client)
    whole = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Tell me a story."}],
                                           max_tokens=30, temperature=0)
    stream = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Tell me a story."}],
                                            max_tokens=30, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_stream_text_matches(client):
    name = model_name(client)
    whole = client.completions.create(model=name, prompt="Once upon a time", max_tokens=25, temperature=0)
    parts = [c.choices[0].text for c in client.completions.create(
        model=name, prompt="Once upon a time", max_tokens=25, temperature=0, stream=True) if c.choices]
    assert "".join(parts) == whole.choices[0].text


def test_parallel_samples(client):
    name = model_name(client)
    r = client.completions.create(model=name, prompt="My favourite animal is", max_tokens=12, n=4, temperature=1.0,
                                  seed=11)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    texts = [c.text for c in sorted(r.choices, key=lambda c: c.index)]
    assert len(set(texts)) > 1, texts  # independent samples differ
    again = client.completions.create(model=name, prompt="My favourite animal is", max_tokens=12, n=4,
                                      temperature=1.0, seed=11)
    assert [c.text for c in sorted(again.choices, key=lambda c: c.index)] == texts
    assert 4 <= r.usage.completion_tokens <= 4 * 12
    # Streamed: every choice index appears and finishes once.
    finishes = {}
    for chunk in client.completions.create(model=name, prompt="My favourite animal is", max_tokens=8, n=3,
                                           temperature=0.8, seed=3, stream=True):
        for c in chunk.choices:
            if c.finish_reason:
                assert c.index not in finishes
                finishes[c.index] = c.finish_reason
    assert sorted(finishes) == [0, 1, 2]


def test_seed_gives_the_same_output_whatever_else_runs(client):
    name = model_name(client)
    args = dict(model=name, prompt="The weather today", max_tokens=20, temperature=0.9, top_p=0.9, seed=1234)
    alone = client.completions.create(**args).choices[0].text
    results = {}

    def other(i):
        client.completions.create(model=name, prompt=f"Noise request number {i} says", max_tokens=20,
                                  temperature=1.0)

    threads = [threading.Thread(target=other, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    results["busy"] = client.completions.create(**args).choices[0].text
    for t in threads:
        t.join()
    assert results["busy"] == alone
    different = client.completions.create(**{**args, "seed": 4321}).choices[0].text
    assert different != alone


def test_stop_strings_cut_the_text(client):
    name = model_name(client)
    full = client.completions.create(model=name, prompt=PROMPT, max_tokens=30, temperature=0).choices[0].text
    assert len(full) > 10
    stop = full[4:8]  # likely spans a token boundary
    cut = client.completions.create(model=name, prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[:full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=name, prompt=PROMPT, max_tokens=30, temperature=0, stop=stop, stream=True) if c.choices)
    assert streamed == cut.choices[0].text


def test_logprobs(client):
    name = model_name(client)
    r = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens or len(content) == r.usage.completion_tokens - 1
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert math.isclose(entry.logprob, tops[0], abs_tol=1e-4)
        assert entry.token == entry.top_logprobs[0].token
    assert "".join(e.token for e in content) == r.choices[0].message.content
    c = client.completions.create(model=name, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(len(t) == 2 for t in lp.top_logprobs)


@pytest.mark.parametrize("body,status,needle", [
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
    ({"prompt": "x", "n": 0}, 400, "n"),
    ({"prompt": "x", "n": 100000}, 400, "n"),
    ({"prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": "x", "logit_bias": {"abc": 1}}, 400, "logit_bias"),
    ({"prompt": "x", "logit_bias": {"5": 1000}}, 400, "logit_bias"),
    ({"prompt": "x", "model": "no-such-model"}, 404, "no-such-model"),
    ({"prompt": "x", "stop": 5}, 400, "stop"),
    ({"prompt": "hello " * 20000, "max_tokens": 4}, 400, "context"),
    ({"prompt": "x", "max_tokens": 100000000}, 400, "context"),
])
def test_bad_completions_get_an_openai_error(server, body, status, needle):
    r = httpx.post(server.base_url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] or needle == error.get("param"), error
    assert "type" in error


@pytest.mark.parametrize("body,status", [
    ({"messages": "hi"}, 400),
    ({"messages": []}, 400),
    ({"messages": [{"role": "user"}]}, 400),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}, 400),
])
def test_bad_chats_get_an_openai_error(server, body, status):
    r = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    assert "error" in r.json()


def test_malformed_bodies(server):
    url = server.base_url + "/v1/completions"
    for raw in (b"{not json", b'{"prompt": "x"', b"[1, 2, 3]", b'{"prompt": "\xff\xfe bad utf-8"}'):
        r = httpx.post(url, content=raw, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400, (raw, r.text)
        assert "error" in r.json()
    r = httpx.post(url, content=b"x" * (64 << 20), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413, r.text
    assert httpx.get(url).status_code == 405
    assert httpx.get(server.base_url + "/v1/nowhere").status_code == 404
    # The server kept serving.
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_the_openai_client_raises_typed_errors(client):
    name = model_name(client)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=name, prompt="x", max_tokens=-1)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="not-this-one", prompt="x", max_tokens=1)


def test_a_client_that_disconnects_mid_stream_frees_its_request(server, client):
    name = model_name(client)
    # ignore_eos: a sampled essay may end on its own before the client leaves.
    body = {"model": name, "prompt": "Write a very long essay about the sea.", "max_tokens": 2000,
            "temperature": 0.7, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", server.base_url + "/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = 0
        for line in lines:
            if line.startswith("data: "):
                got += 1
            if got >= 3:
                break
    # Closed after three chunks: the request and its blocks are gone soon after.
    m = server.wait_idle(timeout=10)
    aborted = sum(v for k, v in m.items() if k.startswith("tetra:request_success_total") and "abort" in k)
    assert aborted >= 1
    # And the server still answers.
    assert client.completions.create(model=name, prompt="Hi", max_tokens=2).choices


def test_a_client_that_vanishes_before_the_answer(server):
    body = json.dumps({"prompt": "Tell me everything.", "max_tokens": 500, "temperature": 0.5}).encode()
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.05)
        s.close()
    server.wait_idle(timeout=30)


def test_api_key_is_required_when_set():
    from conftest import Server
    s = Server("--api-key", "sekret")
    try:
        r = httpx.post(s.base_url + "/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert r.status_code == 401
        assert "error" in r.json()
        wrong = httpx.post(s.base_url + "/v1/completions", json={"prompt": "x", "max_tokens": 1},
                           headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        with_key = openai.OpenAI(base_url=s.base_url + "/v1", api_key="sekret", max_retries=0)
        ok = with_key.completions.create(model=with_key.models.list().data[0].id, prompt="x", max_tokens=2)
        assert ok.choices
        assert httpx.get(s.base_url + "/health").status_code == 200
    finally:
        assert s.stop() == 0


def test_sigterm_finishes_in_flight_streams_and_exits_zero():
    from conftest import Server
    s = Server()
    received = []

    def stream():
        body = {"prompt": "Count to twenty:", "max_tokens": 40, "temperature": 0, "stream": True}
        with httpx.stream("POST", s.base_url + "/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                received.append(line)

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.time() + 30
    while not any(l.startswith("data: ") for l in received) and time.time() < deadline:
        time.sleep(0.01)
    code = s.stop()
    t.join(timeout=60)
    assert code == 0, s.output()
    events = [line for line in received if line]
    assert events and events[-1] == "data: [DONE]", events[-3:]
    assert len(events) >= 3  # the stream ran on to its end, not cut at the signal
