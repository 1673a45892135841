"""The real thing: `dxv serve` on a local Ray in its own process, called over HTTP, then
stopped with `dxv serve --stop` (a Serve cluster and in-process tests do not share a
pytest process)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from datasets.synth.generator import case_dicom_bytes, generate_case
from models.radiographs import RadiographKind
from serving.service import gpu_available

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listener(port: int) -> str | None:
    """The name of the process listening on 127.0.0.1:``port`` (from /proc), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                with open(f"/proc/{pid}/comm") as comm:
                    return comm.read().strip()
        except OSError:  # a process that ended meanwhile, or not ours to read
            continue
    return None


def _niceness(title: str) -> list[int]:
    """The nice value of each process whose title (Ray sets it: ``ray::ServeReplica:...``)
    contains ``title``, from /proc."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if title.encode() not in cmdline.read():
                    continue
            with open(f"/proc/{pid}/stat") as stat:
                found.append(int(stat.read().rsplit(")", 1)[1].split()[16]))  # field 19: nice
        except OSError:  # ended meanwhile
            continue
    return found


def _dxv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], env=env, capture_output=True, text=True, check=True)


@pytest.mark.parametrize("placement", ["auto", "deployment", "pipeline"])
def test_service_on_ray_over_http(tmp_path, placement) -> None:
    """With the default placement (on this CPU machine: the models in the ingress), with
    the models in a deployment of their own, reached through a Serve handle, and with a
    deployment per network behind a decoding one (handles held by a deployment)."""
    port = _free_port()
    env = {**os.environ, "DXV_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}", "DXV_DATA_DIR": str(tmp_path),
           "DXV_ORT_THREADS": "1"}
    _dxv("state", "init", env=env)
    _dxv("state", "seed", "configs/seed/demo.yaml", env=env)
    key = _dxv("keys", "create", "--tenant", "demo", "--role", "adjudicator", env=env).stdout.strip().splitlines()[-1]
    log = (tmp_path / "serve.log").open("w")
    # Started as a script's background job is (SIGINT ignored, which Python would keep): it still stops.
    server = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--set", f"http.port={port}",
                               "--set", "autoscaling.max_replicas=1", "--set", f"models.placement={placement}",
                               "--set", "models.network_cpus=0"],  # six replicas on two cores
                              env=env, stdout=log, stderr=subprocess.STDOUT,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=3).json().get("ready"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(2)
        else:
            pytest.fail("the service did not become ready: " + (tmp_path / "serve.log").read_text()[-3000:])
        case = generate_case(RadiographKind.PERIAPICAL, 404, 9)
        claim = {"claim_id": "RAY-1", "tenant": "demo", "member": {"member_id": "MBR-0001", "birth_date": "1980-05-17"},
                 "provider": {"provider_id": "PRV-001"}, "date_of_service": "2026-04-20",
                 "lines": [{"line_id": "1", "code": "D3330", "tooth": "5", "fee": 1100}],
                 "attachments": [{"radiograph_id": case.image_id, "kind": "periapical",
                                  "content": base64.b64encode(case_dicom_bytes(case)).decode()}]}
        answer = httpx.post(f"{base}/v1/claims:validate", json=claim, headers={"X-API-Key": key}, timeout=120)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["lines"][0]["action"], answer.json()["lines"][0]["suggested_code"]) == ("downcode", "D3320")
        bad = httpx.post(f"{base}/v1/claims:validate", content=b'{"claim_id": ', headers={"X-API-Key": key}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "request.invalid"
        assert httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]["/v1/claims:validate"]
        # http.front defaults to HAProxy, which forwards straight to the ingress replica.
        assert _listener(port) == "haproxy"
        # The replicas (the models' threads) run at the machine's normal priority, not Ray's nice 15.
        assert _niceness("ServeReplica:dxv:Ingress") == [0]
    finally:
        stopped = subprocess.run([sys.executable, "-m", "serving.cli", "serve", "--stop"], env=env, capture_output=True,
                                 text=True)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    assert stopped.returncode == 0, stopped.stderr
    assert server.returncode == 0
    # Read once the service has ended: its stdout goes to a file, buffered until then.
    expected = {"pipeline": "in a deployment each, decoded in another", "deployment": "in a model deployment"}.get(
        placement, "in a model deployment" if gpu_available() else "in the ingress")
    assert f"models {expected})" in (tmp_path / "serve.log").read_text()
    assert _listener(port) is None  # HAProxy went with the service
