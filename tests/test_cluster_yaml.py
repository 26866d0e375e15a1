"""cluster.yaml is a valid Ray cluster-launcher config, checked offline with Ray's own
defaults merging and JSON-schema validator (what `ray up` runs before touching AWS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture()
def config():
    return yaml.safe_load(CLUSTER.read_text())


def test_valid_against_ray_schema(config):
    validate_config(prepare_config(config))


def test_gpu_worker_and_cpu_head(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and gpu[0]["resources"] == {"CPU": 8, "GPU": 1}
    assert 0 <= gpu[0]["min_workers"] <= gpu[0]["max_workers"] <= config["max_workers"]


def setup_sh_packages() -> set[str]:
    """The system packages scripts/setup.sh installs (its apt-get install line)."""
    text = (CLUSTER.parent / "scripts" / "setup.sh").read_text()
    line = next(ln for ln in text.splitlines() if "apt-get install" in ln)
    words = line.split("apt-get install", 1)[1].split(">")[0].split()
    return {w for w in words if not w.startswith("-")}


def test_every_node_installs_what_setup_sh_installs(config):
    """The nodes run scripts/setup.sh itself (the README's installer), so its system
    packages (the TTS engines, sox, wordnet) and the venv cannot drift from a copy."""
    assert {"espeak-ng", "flite", "festival", "sox", "wordnet-base"} <= setup_sh_packages()
    assert "." in config["file_mounts"].values()
    setup = config["setup_commands"]
    assert any("bash scripts/setup.sh" in c and "cd ~/kdprune" in c for c in setup)
    assert not any("espeak" in c for c in setup)  # no second, partial package list


def test_storage_is_shared_and_jobs_inherit_it(config):
    """/shared is exported by the head and mounted by every worker before Ray starts; the
    Ray start commands export the work directory and MLflow store on it (jobs inherit
    the raylet's environment), and GPU workers refuse to join without a usable GPU."""
    head_setup = " ".join(config["head_setup_commands"])
    assert "nfs-kernel-server" in head_setup and "/shared" in head_setup
    worker_setup = " ".join(config["worker_setup_commands"])
    assert "mount -t nfs4 $RAY_HEAD_IP:/shared /shared" in worker_setup
    assert "torch.cuda.is_available()" in worker_setup and ">= 580" in worker_setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert "KDPRUNE_WORKDIR=/shared/" in start
        assert "MLFLOW_TRACKING_URI=sqlite:////shared/" in start
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert not any(line.lstrip().startswith("- #") for line in CLUSTER.read_text().splitlines())


def test_concurrency_follows_the_autoscaler(config, tmp_path):
    """A sweep on the head sizes its concurrency for the cluster at its largest (8 GPU
    workers), not for the zero GPUs present when it starts."""
    from kdprune.orchestration.autoscaler import max_resources, planned_resources
    from kdprune.orchestration.config import SweepConfig, max_concurrent_trials

    boot = tmp_path / "ray_bootstrap_config.yaml"
    boot.write_text(yaml.safe_dump(prepare_config(config)))
    assert max_resources(boot) == {"CPU": 8 + 8 * 8, "GPU": 8}
    present = {"CPU": 8.0}  # the head alone
    gpu_sweep = SweepConfig(name="x", use_gpu=True)
    assert max_concurrent_trials(gpu_sweep, present) == 1
    assert max_concurrent_trials(gpu_sweep, planned_resources(present, boot)) == 8
    assert max_resources(tmp_path / "absent.yaml") == {}  # a local Ray: what is present


def test_a_broken_config_is_refused(config):
    config["available_node_types"]["gpu_worker"]["resources"] = {"GPU": "one"}
    with pytest.raises(Exception, match="one"):
        validate_config(prepare_config(config))
