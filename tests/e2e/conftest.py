"""Fixtures for end-to-end tests: real `tetra serve` processes on loopback.

The tests talk to the server with the official `openai` client (and raw
httpx where a client would refuse to send what we test). Every server binds
127.0.0.1 on a free port and is stopped with SIGTERM at the end, which must
exit 0 (graceful shutdown is part of what is tested).
"""
import os
import resource
import signal
import socket
import subprocess
import time

import httpx
import pytest

TETRA = os.environ.get("TETRA_BINARY", os.path.join(os.path.dirname(__file__), "..", "..", "build", "tetra"))
DEFAULT_MODEL = os.environ.get(
    "TETRA_DEFAULT_MODEL", os.path.expanduser("~/.cache/tetra/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


_raise_fd_limit()  # the soak test holds 1000 connections in this process


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, model=None, threads=2, host="127.0.0.1", prefix=()):
        """`prefix` runs the server under another command (`ip netns exec NS`), listening on `host`."""
        if model is None:
            if not os.path.exists(DEFAULT_MODEL):
                pytest.fail(f"default model {DEFAULT_MODEL} is missing: run scripts/install-default-model.sh")
            model = DEFAULT_MODEL
        self.model = model
        self.port = free_port()
        self.base_url = f"http://{host}:{self.port}"
        self.log_path = f"/tmp/tetra-serve-{self.port}.log"
        self.log = open(self.log_path, "wb")
        cmd = [*prefix, TETRA, "serve", "-m", model, "--host", host, "--port", str(self.port), "-t", str(threads), *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_raise_fd_limit)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tetra serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        pytest.fail(f"tetra serve did not become healthy:\n{self.output()}")

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def metrics(self):
        """The /metrics text as {series: value} (labels kept in the key)."""
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                values[key] = float(value)
        return values

    def metric(self, name):
        """The value of an unlabelled-but-model_name series, summed over its label sets."""
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def wait_idle(self, timeout=30):
        """Waits until no request runs or waits and no KV block is held."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.metrics()
            get = lambda n: sum(v for k, v in m.items() if k == n or k.startswith(n + "{"))
            if (get("tetra:num_requests_running") == 0 and get("tetra:num_requests_waiting") == 0
                    and get("tetra:kv_cache_usage_perc") == 0):
                return m
            time.sleep(0.05)
        raise AssertionError(f"server not idle after {timeout}s: {self.metrics()}")

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"tetra serve ignored SIGTERM for {timeout}s:\n{self.output()}")
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.stop() == 0, s.output()


@pytest.fixture(scope="module")
def client(server):
    import openai
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def run_generate(*args):
    """`tetra generate`'s stdout (the prompt, unless --chat, then the text) without its final newline."""
    out = subprocess.run([TETRA, "generate", *args], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    text = out.stdout.decode()
    assert text.endswith("\n"), text
    return text[:-1]
