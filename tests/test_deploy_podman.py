"""The podman commands the container drill runs: the compose stack's, rendered (no podman here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedpeft.tools.deploy import podman
from tests.test_deploy_compose import STACK, _stack

ROOT = Path(__file__).resolve().parents[1]
NODES = ("supernode-1", "supernode-2")


@pytest.fixture(scope="module")
def stack():
    return podman.load_stack(ROOT, STACK)


def _opts(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def _command(args: list[str], image: str) -> list[str]:
    return args[args.index(image) + 1 :]


def test_the_merged_stack_is_composes(stack):
    # Assert: the renderer merges as the compose tests' model of Compose does
    assert stack == _stack(STACK)


@pytest.mark.parametrize("service", ["superlink", "serverapp", *NODES])
def test_every_service_runs_its_compose_command_on_the_host_network(stack, service, tmp_path):
    # Execute
    args = podman.run_args(stack, service, root=tmp_path, name=f"x-{service}", image="img",
                           env={})  # fmt: skip
    spec = stack["services"][service]
    # Assert: the compose command, unchanged but for the default SuperLink address
    assert args[:6] == ["run", "-d", "--name", f"x-{service}", "--network", "host"]
    expected = [a.replace("${SUPERLINK_ADDRESS:-superlink:8000}", "superlink:8000")
                for a in spec["command"]]  # fmt: skip
    assert _command(args, "img") == expected
    # every service name resolves to this host's loopback
    assert set(_opts(args, "--add-host")) == {f"{s}:127.0.0.1" for s in stack["services"]}
    # volumes and secrets: the compose mounts, relative paths from the project dir
    mounts = _opts(args, "--volume")
    for volume in spec.get("volumes", []):
        host, rest = volume.split(":", 1)
        assert f"{(tmp_path / host).resolve()}:{rest}" in mounts
    for secret in spec.get("secrets", []):
        source = (tmp_path / stack["secrets"][secret["source"]]["file"]).resolve()
        assert f"{source}:{secret['target']}:ro" in mounts
    assert len(mounts) == len(spec.get("volumes", [])) + len(spec.get("secrets", []))
    if "entrypoint" in spec:
        assert json.loads(_opts(args, "--entrypoint")[0]) == spec["entrypoint"]
    assert _opts(args, "--restart") == ([spec["restart"]] if "restart" in spec else [])
    assert "-p" not in args and "--publish" not in args  # the host network needs no ports


def test_supernodes_sharing_one_network_listen_on_distinct_ports(stack, tmp_path):
    # Execute
    ports = []
    for node in NODES:
        args = podman.run_args(stack, node, root=tmp_path, name=node, image="img", env={})
        ports += _opts(_command(args, "img"), "--port")
    # Assert
    assert len(set(ports)) == len(NODES)


def test_an_unregistered_key_replaces_only_the_secret(stack, tmp_path):
    # Prepare
    normal = podman.run_args(stack, "supernode-1", root=tmp_path, name="n", image="img", env={})
    # Execute
    rogue = podman.run_args(stack, "supernode-1", root=tmp_path, name="n", image="img", env={},
                            secret_files={"supernode-1-key": "/k/rogue"}, restart=False,
                            extra=["--platform", "linux/arm64"])  # fmt: skip
    # Assert
    assert "/k/rogue:/app/keys/supernode-1:ro" in _opts(rogue, "--volume")
    assert _opts(rogue, "--restart") == [] and "--platform" in rogue
    assert _command(rogue, "img") == _command(normal, "img")


def test_superlink_address_comes_from_the_environment(stack, tmp_path):
    # Execute
    args = podman.run_args(stack, "supernode-2", root=tmp_path, name="n", image="img",
                           env={"SUPERLINK_ADDRESS": "server.example.org:8000"})  # fmt: skip
    # Assert
    assert _opts(_command(args, "img"), "--superlink") == ["server.example.org:8000"]


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A}x$A", {"A": "1"}, "1x1"),
        ("$$A", {"A": "1"}, "$A"),
        ("${MISSING}", {}, ""),
    ],
)
def test_interpolation_follows_compose(text, env, expected):
    assert podman.interpolate(text, env) == expected


def test_an_unknown_service_key_is_refused(tmp_path):
    # Prepare
    stack = {"services": {"s": {"command": [], "healthcheck": {}}}, "secrets": {}}
    # Execute / Assert
    with pytest.raises(ValueError, match="healthcheck"):
        podman.run_args(stack, "s", root=tmp_path, name="n", image="img", env={})


def test_the_cli_prints_one_argument_a_line(tmp_path):
    # Execute
    res = subprocess.run(
        [sys.executable, "-m", "fedpeft.tools.deploy.podman",
         *[a for f in STACK for a in ("-f", f)],
         "--root", str(ROOT), "--project-dir", str(tmp_path), "supernode-2", "--name", "n2",
         "--image", "img"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = res.stdout.splitlines()
    # Assert: the node-config stays one argument
    node_config = lines[lines.index("--node-config") + 1]
    assert re.fullmatch(r'data-path="/app/data" weights-path="\S+"', node_config)
    assert f"{tmp_path.resolve()}/data/supernode-2:/app/data:ro" in lines


def test_the_drill_scripts_are_strict_and_clean_up():
    # Assert: the shell scripts fail on errors; the drill removes the containers it names
    for script in ("container-drill.sh", "container-host.sh", "container-base.sh"):
        text = (ROOT / "deploy" / script).read_text()
        assert "set -euo pipefail" in text, script
        assert subprocess.run(["bash", "-n", str(ROOT / "deploy" / script)]).returncode == 0
    drill = (ROOT / "deploy" / "container-drill.sh").read_text()
    assert "trap cleanup EXIT" in drill and "unshare -n" in drill
    assert 'pm rm -f -t 3 "fedpeft-drill-$name"' in drill
    assert "python3 -m fedpeft.tools.deploy.podman" in drill  # the compose stack's commands


def test_dockerfile_defaults_are_what_users_with_a_registry_get():
    # Assert: the base images are build arguments whose defaults stay the public images
    app = (ROOT / "docker" / "app.Dockerfile").read_text()
    link = (ROOT / "docker" / "superlink.Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim" in app and "FROM ${BASE_IMAGE}" in app
    assert "ARG BASE_IMAGE=flwr/superlink:${FLWR_VERSION}" in link
    assert "FROM ${BASE_IMAGE}" in link
    # every pip install in the app image uses the repository's pins
    installs = re.findall(r"pip install[^\n]*", app)
    assert installs and all("-c /etc/fedpeft-constraints.txt" in i for i in installs)


def test_a_flag_can_be_given_another_value(stack, tmp_path):
    # Execute
    args = podman.run_args(stack, "supernode-1", root=tmp_path, name="n", image="img", env={},
                           replace={"--port": "9099"})  # fmt: skip
    # Assert
    assert _opts(_command(args, "img"), "--port") == ["9099"]
    with pytest.raises(KeyError, match="--nope"):
        podman.run_args(stack, "supernode-1", root=tmp_path, name="n", image="img", env={},
                        replace={"--nope": "1"})  # fmt: skip
