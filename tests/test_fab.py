"""The staged app folder gives the FAB Flower builds from the app folder itself."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from fedpeft.tools.fab import stage_app

ROOT = Path(__file__).resolve().parents[1]


def _contents(fab: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(fab)) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_staged_app_builds_the_same_fab_as_the_app_folder(tmp_path):
    # Prepare: this repository with its ignored trees in place (outputs, a .venv), copied
    # with only the .venv's pyvenv.cfg: Flower's build walks every file of the folder it
    # is given, and the real .venv's ~60,000 made this test take 32 s in the suite (AVX2
    # EPYC, 2026-12-08)
    (ROOT / "outputs").mkdir(exist_ok=True)
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, symlinks=True, ignore=lambda d, _: {".venv", ".git"}
                    if Path(d) == ROOT else set())  # fmt: skip
    (repo / ".venv").mkdir()
    shutil.copy2(ROOT / ".venv" / "pyvenv.cfg", repo / ".venv" / "pyvenv.cfg")
    # Execute
    staged = stage_app(repo, tmp_path / "app")
    # Assert: the same files with the same bytes (the manifest lists their hashes)
    want, got = _contents(build_fab_from_disk(repo)), _contents(build_fab_from_disk(staged))
    assert sorted(got) == sorted(want) and "pyproject.toml" in got
    assert got == want
    real = stage_app(ROOT, tmp_path / "real")  # the repository itself: .venv and .git stay
    assert not (real / ".venv").exists() and not (real / ".git").exists()
    assert not (staged / ".venv").exists()


def test_the_fab_holds_the_apps_code_and_presets_not_the_repositorys_results(tmp_path):
    # Prepare: what the app imports and reads at run time
    packages = ("fedpeft", "server_app", "client_app", "peft_strategies")
    code = {str(p.relative_to(ROOT)) for pkg in packages for p in (ROOT / pkg).rglob("*.py")
            if "__pycache__" not in p.parts}  # fmt: skip
    presets = {str(p.relative_to(ROOT)) for p in (ROOT / "conf").glob("*.toml")}
    # Execute
    names = set(_contents(build_fab_from_disk(stage_app(ROOT, tmp_path / "app"))))
    # Assert: every module and preset travels; results, tests and benchmarks do not
    assert code <= names and presets <= names
    assert not {n for n in names if n.split("/")[0] in ("docs", "tests", "benchmarks", "docker")}
