"""Discovery through etcd (doc/disaggregation.md, "Discovery").

A real etcd (Debian's etcd-server) on loopback; prefill and decode
instances register with `--etcd` under short leases; `tetra router --etcd`
has no static list and finds them. An instance killed with SIGKILL leaves
when its lease runs out, one stopped with SIGTERM at once, and a new one
joins: requests keep being answered throughout. Skipped without etcd.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import httpx
import pytest

from conftest import Server, free_port
from test_disaggregation import complete, exported, prompt_ids, router


@pytest.fixture()
def etcd():
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("etcd is not installed (scripts/install-deps.sh installs etcd-server)")
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    with tempfile.TemporaryDirectory() as data:
        log = open(os.path.join(data, "etcd.log"), "wb")
        proc = subprocess.Popen([binary, "--data-dir", os.path.join(data, "etcd"), "--name", "test",
                                 "--listen-client-urls", url, "--advertise-client-urls", url,
                                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                                 "--initial-cluster", f"test=http://127.0.0.1:{peer}"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                pytest.fail("etcd did not start")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def listed(router_base, role):
    """The instance URLs of a role the router lists in its metrics."""
    text = httpx.get(router_base + "/metrics").text
    return sorted(line.split('url="')[1].split('"')[0] for line in text.splitlines()
                  if line.startswith("tetra:router_instance_healthy{") and f'role="{role}"' in line
                  and line.endswith(" 1"))


def wait_for(predicate, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_instances_found_in_etcd_join_and_leave_the_pools(etcd):
    decode = Server("--role", "decode", "--etcd", etcd, "--etcd-ttl", "2", threads=1)
    prefill = Server("--role", "prefill", "--etcd", etcd, "--etcd-ttl", "2", threads=1)
    single = Server(threads=1)
    proc, base = router("--etcd", etcd)
    second = None
    try:
        assert wait_for(lambda: listed(base, "prefill") == [prefill.base_url])
        assert listed(base, "decode") == [decode.base_url]
        p = prompt_ids(150, seed=60)
        assert complete(_at(base), p) == complete(single, p)
        assert exported(prefill) == 1

        # Killed: its lease runs out and it leaves; requests go on (prefilled on the decode side).
        prefill.proc.send_signal(signal.SIGKILL)
        prefill.proc.wait(timeout=10)
        assert wait_for(lambda: listed(base, "prefill") == [], timeout=15)
        q = prompt_ids(160, seed=61)
        assert complete(_at(base), q) == complete(single, q)

        # A new one registers and takes the next prompt.
        second = Server("--role", "prefill", "--etcd", etcd, "--etcd-ttl", "2", threads=1)
        assert wait_for(lambda: listed(base, "prefill") == [second.base_url])
        r = prompt_ids(170, seed=62)
        assert complete(_at(base), r) == complete(single, r)
        assert exported(second) == 1

        # Stopped: it revokes its lease on the way out, and the router has no decode instance left.
        assert decode.stop() == 0
        assert wait_for(lambda: httpx.get(base + "/health").status_code == 503, timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        for s in (second, single, decode):
            if s is not None and s.proc.poll() is None:
                s.stop()


class _at:
    """Just a base URL, for complete()."""

    def __init__(self, base):
        self.base_url = base


def test_serve_refuses_etcd_without_a_role_and_an_unreachable_etcd(etcd):
    from conftest import TETRA, DEFAULT_MODEL
    both = subprocess.run([TETRA, "serve", "-m", DEFAULT_MODEL, "--port", "0", "--etcd", etcd],
                          capture_output=True, text=True, timeout=60)
    assert both.returncode != 0 and "--role prefill or --role decode" in both.stderr
    gone = subprocess.run([TETRA, "serve", "-m", DEFAULT_MODEL, "--port", "0", "--role", "prefill",
                           "--etcd", f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60)
    assert gone.returncode != 0 and "127.0.0.1" in gone.stderr
