"""The compose files, checked offline (no Docker engine here) against the process launcher."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from flwr.common.config import parse_config_args

from fedpeft.config import parse_node_config
from fedpeft.tools.deploy import compose
from fedpeft.tools.deploy.launcher import Federation
from fedpeft.tools.deploy.spec import FederationSpec

ROOT = Path(__file__).resolve().parents[1]
STACK = ("docker-compose.yml", "docker/with-state.yml", "docker/with-tls.yml",
         "docker/with-auth.yml")  # fmt: skip
GPU = "docker/with-gpu.yml"  # stacks on any prefix of STACK
NODES = ("supernode-1", "supernode-2")


def _merge_mapping(base: dict, over: dict) -> dict:
    """Compose's merge of a mapping: key by key, nested mappings too; other values replaced."""
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merge_mapping(base[key], value) if both else value
    return merged


def _merge_service(base: dict, over: dict) -> dict:
    """Docker Compose's override rules for the keys these files use."""
    merged = dict(base)
    for key, value in over.items():
        if key in ("volumes", "secrets"):  # merged by mount target

            def target(v):
                return v["target"] if isinstance(v, dict) else v.split(":")[1]

            kept = {target(v): v for v in merged.get(key, [])}
            kept.update({target(v): v for v in value})
            merged[key] = list(kept.values())
        elif key == "ports":
            merged[key] = sorted(set(merged.get(key, [])) | set(value))
        elif key in ("build", "deploy", "environment"):  # mappings: merged key by key
            merged[key] = _merge_mapping(merged.get(key, {}), value)
        else:  # command, entrypoint and scalars are replaced
            merged[key] = value
    return merged


def _stack(files: tuple[str, ...]) -> dict:
    result: dict = {"services": {}, "secrets": {}}
    for rel in files:
        doc = yaml.safe_load((ROOT / rel).read_text())
        for name, service in doc["services"].items():
            result["services"][name] = _merge_service(result["services"].get(name, {}), service)
        result["secrets"].update(doc.get("secrets", {}))
    return result


def _flags(cmd: list[str]) -> list[str]:
    return [a for a in cmd if a.startswith("--")]


def test_committed_compose_files_are_what_the_flags_render():
    # Execute
    rendered = compose.render()
    # Assert: one source for the process launcher and the containers
    assert set(rendered) == {*STACK, GPU}
    for rel, text in rendered.items():
        assert (ROOT / rel).read_text() == text, (
            f"{rel} is stale: python -m fedpeft.tools.deploy.compose"
        )


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    spec = FederationSpec(app=ROOT, workdir=tmp_path_factory.mktemp("fed"), num_supernodes=2)
    return Federation(spec)  # builds commands and certificates; starts nothing


def test_tls_auth_stack_runs_the_launchers_flags(launcher):
    # Prepare
    services = _stack(STACK)["services"]
    link_cmd = launcher.superlink_cmd()
    node_cmd = launcher.supernode_cmd(0, Path("key"), 9094)
    # Assert: same flags; containers differ only in isolation (ServerApps run in `serverapp`)
    assert _flags(services["superlink"]["command"]) == [
        f for f in _flags(link_cmd) if f != "--disable-runtime-dependency-installation"
    ]
    assert "--enable-supernode-auth" in services["superlink"]["command"]
    link = services["superlink"]["command"]
    assert link[link.index("--isolation") + 1] == "process"
    for name in ("supernode-1", "supernode-2"):
        assert _flags(services[name]["command"]) == _flags(node_cmd)
    assert "--root-certificates" in services["serverapp"]["command"]


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_every_stack_is_complete(depth):
    # Prepare
    stack = _stack(STACK[:depth])
    services = stack["services"]
    # Assert: services, ports, volumes
    assert set(services) == {"superlink", "serverapp", "supernode-1", "supernode-2"}
    assert services["superlink"]["ports"] == ["8000:8000"]
    assert "./outputs:/app/outputs" in services["serverapp"]["volumes"]
    assert services["serverapp"]["entrypoint"] == ["flower-superexec"]
    for name in ("supernode-1", "supernode-2"):
        node = services[name]
        assert "ports" not in node  # a SuperNode dials out; nothing listens outside it
        assert f"./data/{name}:/app/data:ro" in node["volumes"]
        assert "./weights:/app/weights:ro" in node["volumes"]
        config = parse_config_args([node["command"][node["command"].index("--node-config") + 1]])
        parse_node_config(config, files=False)
        assert ("--insecure" in node["command"]) == (depth < 3), name
    state = depth >= 2
    assert ("--database" in services["superlink"]["command"]) == state
    assert ("./state:/app/state" in services["superlink"].get("volumes", [])) == state
    # Every secret a service mounts is declared, from a git-ignored directory
    for service in services.values():
        for secret in service.get("secrets", []):
            source = stack["secrets"][secret["source"]]["file"]
            assert source.startswith(("./certs/", "./keys/"))


def test_secret_directories_are_never_committed():
    # Execute
    res = subprocess.run(["git", "check-ignore", "certs/ca.key", "keys/supernode-1",
                          "state/superlink.db", "deployment/pids.json"],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    # Assert
    assert res.stdout.split() == ["certs/ca.key", "keys/supernode-1", "state/superlink.db",
                                  "deployment/pids.json"]  # fmt: skip
    tracked = subprocess.run(["git", "ls-files", "certs", "keys", "state"], cwd=ROOT,
                             capture_output=True, text=True).stdout  # fmt: skip
    assert tracked == ""


@pytest.mark.parametrize("depth", [1, 4])
def test_the_gpu_overlay_gives_every_supernode_a_gpu_and_cuda_torch(depth):
    # Prepare
    without = _stack(STACK[:depth])["services"]
    # Execute
    services = _stack((*STACK[:depth], GPU))["services"]
    # Assert: each SuperNode reserves one NVIDIA GPU and builds with a CUDA wheel index
    for name in NODES:
        node = services[name]
        devices = node["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name
        build = node["build"]
        assert build["dockerfile"] == "docker/app.Dockerfile" and build["context"] == "."
        assert "whl/cu" in build["args"]["TORCH_INDEX_URL"]
        assert "compute" in node["environment"]["NVIDIA_DRIVER_CAPABILITIES"]
        # nothing else of the SuperNode changes: same command, volumes, secrets
        rest = {k: v for k, v in node.items() if k not in ("build", "deploy", "environment")}
        assert rest == {k: v for k, v in without[name].items() if k != "build"}
    # The SuperLink and the ServerApp executor keep the CPU image and ask for no GPU
    for name in ("superlink", "serverapp"):
        assert services[name] == without[name]


def test_the_dockerfiles_torch_index_is_the_build_arg_the_gpu_overlay_sets():
    # Prepare
    dockerfile = (ROOT / "docker" / "app.Dockerfile").read_text()
    # Assert: the arg exists, CPU wheels by default, and torch is installed from it
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    assert '--index-url "${TORCH_INDEX_URL}" ${TORCH_PACKAGES}' in dockerfile
    assert compose.CUDA_TORCH_INDEX.startswith("https://download.pytorch.org/whl/cu")
