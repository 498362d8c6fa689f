"""The package as users get it: `python -m build` makes an sdist and, from that sdist, a wheel; `twine check` accepts
both; the wheel, installed into a fresh virtual environment outside the checkout, runs `db upgrade` and `demo` from a
directory outside the checkout, so every SQL file and schema the tool reads must be inside the wheel.

Offline and quick (it runs in every test run, twice in CI): the build uses this environment's setuptools (the test
extra pins what `[build-system]` requires) instead of downloading it into two throwaway ones, and the fresh
environment sees this one's installed packages, less the checkout's own editable install, so pip installs the wheel
with `--no-index`: it still refuses the wheel if a requirement it declares is not met by them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import TEST_CONTACT_EMAIL, TEST_ENCRYPTION_KEY
from schema_helpers import SCHEMAS, errors

CHECKOUT = Path(__file__).parents[2]
pytestmark = pytest.mark.packaging
SCHEMA_DUMP = (
    "import json; from importlib.resources import files; "
    "print(json.dumps({p.name: json.loads(p.read_text()) for p in files('cliniko_sync.schemas').iterdir() "
    "if p.name.endswith('.json')}))"
)


def run(command: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    completed = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert completed.returncode == 0, f"{command}: {completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return completed.stdout


def test_the_wheel_installs_outside_the_checkout_and_runs(tmp_path: Path, empty_database_url: str) -> None:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, CHECKOUT], cwd=tmp_path)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist], cwd=tmp_path)

    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("sql/migrations", "sql/queries", "sql/views"):
        in_checkout = {path.name for path in (CHECKOUT / folder).glob("*.sql")}
        in_wheel = {Path(name).name for name in names if name.startswith(f"cliniko_sync/{folder}/")}
        assert in_checkout and in_checkout == in_wheel, folder
    schemas = {path.name for path in (CHECKOUT / "cliniko_sync/schemas").glob("*.json")}
    assert schemas == {Path(name).name for name in names if name.startswith("cliniko_sync/schemas/")} - {"__init__.py"}
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    installed_here = Path(sysconfig.get_paths()["purelib"])
    dependencies = tmp_path / "dependencies"
    dependencies.mkdir()
    for entry in installed_here.iterdir():
        if not entry.name.startswith(("__editable__", "cliniko_sync")):
            (dependencies / entry.name).symlink_to(entry)
    (Path(sysconfig.get_paths(vars={"base": str(venv)})["purelib"]) / "dependencies.pth").write_text(
        f"{dependencies}\n"
    )
    run(
        [sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "--quiet", "--no-compile",
         "--no-index", wheel],
        cwd=tmp_path,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "DATABASE_URL": empty_database_url,
        "CREDENTIALS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "CLINIKO_SYNC_CONTACT_EMAIL": TEST_CONTACT_EMAIL,
        "CLINIKO_SYNC_DATA_DIR": str(tmp_path / "data"),
    }
    located = run([venv / "bin/python", "-c", "import cliniko_sync; print(cliniko_sync.__file__)"], cwd=elsewhere)
    assert Path(located.strip()).is_relative_to(venv), located
    cliniko_sync = venv / "bin/cliniko-sync"

    run([cliniko_sync, "db", "upgrade"], cwd=elsewhere, env=env)
    migrations = json.loads(run([cliniko_sync, "db", "status", "--format", "json"], cwd=elsewhere, env=env))
    assert migrations and {row["status"] for row in migrations} == {"applied"}
    # The installed package carries the very schemas, and they accept what the installed tool prints.
    installed = run([venv / "bin/python", "-c", SCHEMA_DUMP], cwd=elsewhere)
    assert json.loads(installed) == SCHEMAS
    assert errors("db-status", migrations) == []
    demo = run([cliniko_sync, "demo"], cwd=elsewhere, env=env)
    assert "Active patients of demo-clinic" in demo
    assert not list(elsewhere.iterdir()), "the installed tool wrote into its working directory"
