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


def test_installs_the_project_and_keeps_the_dashboard_on_loopback(config):
    assert "." in config["file_mounts"].values()
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "-e ~/kdprune" in setup
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


def test_a_broken_config_is_refused(config):
    config["available_node_types"]["gpu_worker"]["resources"] = {"GPU": "one"}
    with pytest.raises(Exception, match="one"):
        validate_config(prepare_config(config))
