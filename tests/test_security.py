"""Security and early-failure proofs (issue #7), all on real processes, no mocks.

- A teacher that does not exist: `kdprune compress` and a sweep script each stop with one
  clear error naming the path (stderr, exit 2, nothing on stdout: the CLI's error
  contract) before any data, training or Ray start.
- The embedded Ray a local sweep starts (`connect_ray`, as `run_sweep` calls it) serves
  its dashboard on 127.0.0.1 only; every listener Ray opens on the network either refuses
  a caller without Ray's auth token or only serves Prometheus metrics; the `mlflow ui`
  guidance binds loopback too.
- Paths read from manifests never become paths written to: `test_security_paths.py`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import PY, clean_env

REPO = Path(__file__).resolve().parents[1]
MISSING = "/nonexistent/kdprune-teacher"


def kdprune_cmd() -> list[str]:
    script = Path(PY).parent / "kdprune"  # the console script of DESIGN §3
    if script.exists():
        return [str(script)]
    return [PY, "-c", "import sys; from kdprune.cli import main; sys.exit(main())"]


def assert_one_error(proc: subprocess.CompletedProcess, path: str, prefix: str) -> str:
    """Exit 2, nothing on stdout, one stderr line: the error naming `path`."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stdout == "", proc.stdout
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert prefix in lines[0] and path in lines[0], lines[0]
    return lines[0]


def test_compress_with_a_missing_teacher_fails_at_once(tmp_path):
    """`kdprune compress --teacher /nonexistent/...`: one line naming the path, exit 2,
    and nothing written (no corpus, features or training started)."""
    work = tmp_path / "work"
    proc = subprocess.run(
        [*kdprune_cmd(), "compress", "--preset", "tiny", "--teacher", MISSING]
        + ["--workdir", str(work)],
        env=clean_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = assert_one_error(proc, MISSING, "kdprune compress: error:")
    assert "model directory not found" in line
    assert not work.exists() and not (tmp_path / "default-work").exists()


def test_compress_with_a_teacher_that_is_not_a_model_dir(tmp_path, capsys):
    """An existing folder (or file) that is no model directory: the same contract."""
    from kdprune.cli import main

    empty = tmp_path / "empty-teacher"
    empty.mkdir()
    (tmp_path / "a-file").write_text("x")
    work = tmp_path / "work"
    for teacher, words in [(empty, "missing config.json"), (tmp_path / "a-file", "not found")]:
        code = main(
            ["compress", "--preset", "tiny", "--teacher", str(teacher), "--workdir", str(work)]
        )
        out, err = capsys.readouterr()
        assert code == 2 and out == ""
        assert err.startswith("kdprune compress: error:") and len(err.splitlines()) == 1, err
        assert str(teacher) in err and words in err, err
    assert not work.exists()


def test_sweep_with_a_missing_teacher_fails_before_ray(tmp_path):
    """`sweeps/l0_vs_lrf.py --teacher /nonexistent/...`: one error line naming the path,
    exit 2, no stdout; Ray never started (its temp dir is never made), no sweep state or
    Ray results; only the MLflow store, which is checked first, exists."""
    work = tmp_path / "work"
    ray_tmp = tmp_path / "raytmp"  # RAY_TMPDIR: where a started Ray makes ray/session_*
    proc = subprocess.run(
        [PY, str(REPO / "sweeps" / "l0_vs_lrf.py"), "--smoke-test", "--teacher", MISSING]
        + ["--workdir", str(work)],
        env=clean_env(tmp_path, RAY_TMPDIR=str(ray_tmp)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = assert_one_error(proc, MISSING, "error: model directory not found")
    assert line.startswith("[kdprune "), line  # the sweep scripts' log format
    assert not ray_tmp.exists()
    assert set(os.listdir(work)) <= {"mlflow.db"}  # no sweeps/ state, no ray_results/


# --- The embedded Ray's network exposure -------------------------------------------------

LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def listeners(procs: list[psutil.Process]) -> list[dict]:
    out = []
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
            name = p.name()
        except psutil.Error:  # exited meanwhile
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                out.append({"pid": p.pid, "proc": name, "ip": c.laddr.ip, "port": c.laddr.port})
    return out


def probe_http(host: str, port: int) -> str:
    """What an unauthenticated HTTP client gets: 'auth' (401/403), 'metrics' (a Prometheus
    page), 'not-http' (gRPC etc.) or 'open <status>' (an endpoint that answered)."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/api/jobs/")
        resp = conn.getresponse()
        body = resp.read(200)
    except (http.client.HTTPException, OSError):
        return "not-http"
    finally:
        conn.close()
    if resp.status in (401, 403):
        return "auth"
    if resp.status == 200 and body.startswith((b"# HELP", b"# TYPE")):
        return "metrics"
    return f"open {resp.status}"


@pytest.fixture()
def embedded_ray(monkeypatch):
    """A one-CPU Ray started by the product's own `connect_ray` (what `run_sweep` does
    without RAY_ADDRESS), in its own temp dir; shut down (and its processes reaped by pid)
    at the end."""
    import ray

    from kdprune.orchestration.tuner import connect_ray

    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(key, raising=False)  # also restores what connect_ray sets
    temp = Path(tempfile.mkdtemp(prefix="kds", dir="/tmp"))  # short: Ray's socket paths
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    started: list[psutil.Process] = []
    try:
        assert connect_ray(num_cpus=1) is True
        started = psutil.Process().children(recursive=True)
        yield ray
    finally:
        ray.shutdown()
        _, alive = psutil.wait_procs(started, timeout=15)
        for p in alive:  # only processes this fixture's Ray started
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(temp, ignore_errors=True)


def test_embedded_ray_dashboard_listens_on_loopback_only(embedded_ray):
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    ray = embedded_ray
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    socks = listeners(procs)
    dash = int(os.environ["RAY_API_SERVER_ADDRESS"].rsplit(":", 1)[1])  # set by connect_ray
    assert [s["ip"] for s in socks if s["port"] == dash] == ["127.0.0.1"], socks
    conn = http.client.HTTPConnection("127.0.0.1", dash, timeout=10)
    conn.request("GET", "/api/version")
    assert conn.getresponse().status in (200, 401)  # it is the dashboard, and it answers
    conn.close()

    node_ip = ray.nodes()[0]["NodeManagerAddress"]
    if node_ip not in LOOPBACK:  # from the network the dashboard port is closed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((node_ip, dash), timeout=5).close()

    # Ray opens its other ports on the node's address or all interfaces (ray.init has no
    # option to bind them to loopback: it maps a loopback node IP back to the real one).
    # Each must refuse an unauthenticated caller or only serve metrics.
    exposed = []
    for s in socks:
        if s["ip"] in LOOPBACK:
            continue
        host = node_ip if s["ip"] in ("0.0.0.0", "::") else s["ip"]
        s["unauthenticated_http"] = probe_http(host, s["port"])
        exposed.append(s)
    print(
        json.dumps(
            {
                "measure": "ray_listeners",
                "dashboard_port": dash,
                "node_ip": node_ip,
                "non_loopback": exposed,
            }
        )
    )
    assert not [s for s in exposed if s["unauthenticated_http"].startswith("open")], exposed
    gcs = ray.get_runtime_context().gcs_address  # the control plane: token required
    stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(grpc.insecure_channel(gcs))
    with pytest.raises(grpc.RpcError) as err:
        stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value


def test_mlflow_ui_guidance_binds_loopback():
    """Every `mlflow ui` / `mlflow server` the README or the code tells users to run
    binds 127.0.0.1 (the sweep prints one after each run)."""
    files = [REPO / "README.md", *REPO.glob("analysis/*.md")]
    for folder in ("kdprune", "sweeps", "analysis", "bench"):
        files += (REPO / folder).rglob("*.py")
    hits = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if re.search(r"mlflow (ui|server)\b", line):
                hits.append((f.relative_to(REPO).as_posix(), line))
                assert "--host 127.0.0.1" in line and "0.0.0.0" not in line, (f, line)
    assert {"README.md", "kdprune/orchestration/cli.py"} <= {f for f, _ in hits}, hits
