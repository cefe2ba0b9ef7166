"""The certificate and key scripts ship in the wheel and run from an install without a checkout."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("fedpeft/tools/deploy/scripts/certs.sh", "fedpeft/tools/deploy/scripts/node-keys.sh")

# Runs in the child: the checkout (put on sys.path by the editable install's .pth) is dropped,
# so fedpeft can only come from the installed wheel (first on PYTHONPATH).
CHILD = """
import json, sys
from pathlib import Path
root, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
paths = [str(Path(p or ".").resolve()) for p in sys.path]
import fedpeft
from fedpeft.tools.deploy.secrets import ensure_certs, ensure_node_key
tls = ensure_certs(out / "certs")
private, public = ensure_node_key(out / "keys", "supernode-1")
print(json.dumps({"fedpeft": fedpeft.__file__, "sys_path": paths, "ca": tls.ca,
                  "cert": tls.cert, "key": tls.key, "private": str(private),
                  "public": str(public)}))
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    assert res.returncode == 0, f"{cmd}: {res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # With hatchling in the venv, build offline; otherwise pip fetches it into an isolated env.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out),
          str(ROOT)])  # fmt: skip
    (whl,) = out.glob("fedpeft-*.whl")
    return whl


def test_wheel_holds_the_scripts(wheel):
    # Execute
    names = zipfile.ZipFile(wheel).namelist()
    # Assert
    for script in SCRIPTS:
        assert script in names


def test_certificate_step_runs_from_the_installed_wheel(wheel, tmp_path):
    # Prepare: the wheel installed into its own directory; cwd outside the checkout
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
          "--target", str(site), str(wheel)])  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}
    # Execute: the launcher's certificate and key step, and the documented command
    res = _run([sys.executable, "-c", CHILD, str(ROOT), str(work)], cwd=work, env=env)
    made = json.loads(res.stdout.strip().splitlines()[-1])
    _run([sys.executable, "-m", "fedpeft.tools.deploy.secrets", "node-keys", str(work / "keys"),
          "supernode-2"], cwd=work, env=env)  # fmt: skip
    # Assert: fedpeft came from the wheel, not the checkout
    assert Path(made["fedpeft"]).resolve().is_relative_to(site.resolve())
    assert str(ROOT) not in made["sys_path"]
    # Assert: the files exist, openssl accepts the certificates, ssh-keygen the keys
    for key in ("ca", "cert", "key", "private", "public"):
        assert Path(made[key]).is_file(), key
    for cert in (made["ca"], made["cert"]):
        _run(["openssl", "x509", "-noout", "-in", cert])
    _run(["openssl", "verify", "-CAfile", made["ca"], made["cert"]])
    for pub in (made["public"], str(work / "keys" / "supernode-2.pub")):
        _run(["ssh-keygen", "-l", "-f", pub])


def test_checkout_wrappers_run_the_packaged_scripts(tmp_path):
    # Execute: the commands docs/DEPLOY.md gives, from a checkout
    _run(["bash", str(ROOT / "deploy/certs.sh"), str(tmp_path / "certs"), "localhost"])
    _run(["bash", str(ROOT / "deploy/node-keys.sh"), str(tmp_path / "keys"), "supernode-1"])
    # Assert
    _run(["openssl", "x509", "-noout", "-in", str(tmp_path / "certs/server.pem")])
    _run(["ssh-keygen", "-l", "-f", str(tmp_path / "keys/supernode-1.pub")])
