"""Screenshots of a sweep in the MLflow UI, as a user opens it: the experiment page (runs
table), a trial run's artefacts, and the Model Registry entry of the sweep. Starts
``mlflow ui --host 127.0.0.1`` for the store, drives headless Chromium, writes PNGs, stops
the server. A manual check of issue 15 item 6 (CI does not depend on Chromium).

Usage:
    .venv/bin/python analysis/screenshot_mlflow.py --experiment method_table
    .venv/bin/python analysis/screenshot_mlflow.py --experiment l0_vs_lrf \\
        --tracking-uri sqlite:////abs/work/mlflow.db --out /tmp/shots
Needs Chromium (``apt-get install -y chromium``). Prints one JSON line: the PNG paths.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kdprune.contract import (
    ROLE_TRIAL,
    TAG_ROLE,
    UI_WORKFLOW_QUERY,
    registered_model_name,
    resolve_tracking_uri,
    ui_runs_path,
)
from kdprune.utils import emit_result, log

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("no Chromium found: apt-get install -y chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(uri: str, port: int, log_path: Path) -> subprocess.Popen:
    """The MLflow UI server in its own process group (so all its workers stop with it)."""
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_bin), "ui", "--backend-store-uri", uri, "--registry-store-uri", uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    out = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(port: int, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"the MLflow UI exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"the MLflow UI did not answer on port {port} within {timeout_s:.0f} s")


def screenshot(url: str, png: Path, size: str, budget_ms: int) -> Path:
    """One page, after ``budget_ms`` of virtual time for the JS app to load its data."""
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--screenshot={png}", f"--window-size={size}",
           f"--virtual-time-budget={budget_ms}", url]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    log(f"{url} -> {png}")
    return png


def pages(uri: str, experiment: str, port: int) -> dict[str, str]:
    """URLs of the experiment page, its first finished trial run's artefacts, and the
    registered model (when it exists)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment {experiment!r} in {uri}")
    root = f"http://127.0.0.1:{port}/"
    base = f"{root}#/experiments/{exp.experiment_id}"
    # `default`: the experiment's plain link in a fresh browser; `experiment`: with the
    # sidebar's "Model training" switch (remembered by the browser); `trials`: the view
    # the sweep keeps on the experiment (the link in its description and sweep result).
    out = {
        "default": base,
        "experiment": f"{base}/runs?{UI_WORKFLOW_QUERY}",
        "trials": root + ui_runs_path(exp.experiment_id),
    }
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}' AND attributes.status = 'FINISHED'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if runs:
        out["run"] = f"{base}/runs/{runs[0].info.run_id}/artifacts?{UI_WORKFLOW_QUERY}"
    try:
        name = registered_model_name(experiment)
        client.get_registered_model(name)
        out["registry"] = f"http://127.0.0.1:{port}/#/models/{name}?{UI_WORKFLOW_QUERY}"
    except MlflowException:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or work/")
    ap.add_argument("--out", type=Path, default=Path("work/screenshots"), help="PNG folder")
    ap.add_argument("--port", type=int, default=0, help="default: a free port")
    ap.add_argument("--window-size", default="2000,1000")
    ap.add_argument("--budget-ms", type=int, default=15000, help="virtual time per page")
    args = ap.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri)
    args.out.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    proc = start_ui(uri, port, args.out / "mlflow_ui.log")
    shots = {}
    try:
        wait_healthy(port, proc)
        for name, url in pages(uri, args.experiment, port).items():
            png = args.out / f"mlflow_{args.experiment}_{name}.png"
            shots[name] = str(screenshot(url, png, args.window_size, args.budget_ms).resolve())
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
    emit_result({"tracking_uri": uri, "experiment": args.experiment, "screenshots": shots})
    return 0


if __name__ == "__main__":
    sys.exit(main())
