"""/metrics read by an independent oracle: the official Prometheus Python
client's text parser (prometheus_client.parser) must accept the whole page
and find the families tetra documents, with the right types and values,
after one real completion."""
import math
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def families(server):
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    # The parser raises on any line that is not valid exposition format.
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, name=None, **labels):
    return [s for s in family.samples
            if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items())]


def test_metrics_parse_with_the_prometheus_client(server):
    r = httpx.post(server.base_url + "/v1/completions",
                   json={"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] > 0

    # The finish is counted as the answer ends; poll rather than race it.
    deadline = time.time() + 30
    while True:
        fams = families(server)
        finished = sum(s.value for s in fams["tetra:request_success"].samples)
        if finished >= 1 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert finished >= 1

    want = {
        "tetra:num_requests_running": "gauge",
        "tetra:num_requests_waiting": "gauge",
        "tetra:kv_cache_usage_perc": "gauge",
        "tetra:prompt_tokens": "counter",  # the parser names counters without _total
        "tetra:generation_tokens": "counter",
        "tetra:request_success": "counter",
        "tetra:time_to_first_token_seconds": "histogram",
        "tetra:inter_token_latency_seconds": "histogram",
        "tetra:e2e_request_latency_seconds": "histogram",
        "tetra:request_queue_time_seconds": "histogram",
    }
    for name, kind in want.items():
        assert name in fams, f"{name} missing; got {sorted(fams)}"
        assert fams[name].type == kind, (name, fams[name].type)
        assert fams[name].documentation, name
        for s in fams[name].samples:
            assert "model_name" in s.labels, s

    assert samples(fams["tetra:prompt_tokens"], "tetra:prompt_tokens_total")[0].value > 0
    assert samples(fams["tetra:generation_tokens"], "tetra:generation_tokens_total")[0].value > 0
    usage = fams["tetra:kv_cache_usage_perc"].samples[0].value
    assert 0 <= usage <= 1

    reasons = {s.labels["finished_reason"]: s.value for s in fams["tetra:request_success"].samples}
    assert set(reasons) == {"stop", "length", "abort", "error"}, reasons
    assert reasons["stop"] + reasons["length"] >= 1

    for name in ("tetra:time_to_first_token_seconds", "tetra:e2e_request_latency_seconds"):
        fam = fams[name]
        buckets = [(float(s.labels["le"]), s.value) for s in samples(fam, name + "_bucket")]
        assert len(buckets) > 1, name
        assert buckets[-1][0] == math.inf, name
        bounds = [le for le, _ in buckets]
        counts = [c for _, c in buckets]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), name
        assert counts == sorted(counts), f"{name}: buckets not cumulative: {counts}"
        count = samples(fam, name + "_count")[0].value
        assert count >= 1, name
        assert counts[-1] == count, name
        assert samples(fam, name + "_sum")[0].value >= 0, name
