"""The package as a user installs it before it is on an index (docs/python.md, "Install"):
`python -m build` makes an sdist and, from that sdist, a wheel; the wheel installs into a
fresh virtualenv with --no-deps --no-index and its console script runs from there, not from
this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env=env, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_the_built_wheel_installs_into_a_fresh_virtualenv_and_runs(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="pip install build (the [test] extra has it)")
    from rolesanywhere_hsm import __version__

    # A copy: building writes build/ and *.egg-info into the source tree, which must not
    # appear in the checkout (an egg-info on PYTHONPATH looks like an installed distribution).
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "build", "dist", "*.egg-info", ".venv", ".pytest_cache", ".hypothesis"))
    dist = tmp_path / "dist"
    built = _run(sys.executable, "-m", "build", "--outdir", dist, source, cwd=tmp_path)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "Deprecat" not in built.stdout + built.stderr, "the metadata uses a deprecated form"
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    assert [p.name for p in sdists] == [f"rolesanywhere_hsm-{__version__}.tar.gz"]
    assert [p.name for p in wheels] == [f"rolesanywhere_hsm-{__version__}-py3-none-any.whl"]

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # no PYTHONPATH (the checkout) and no pip configuration of the test run's
    clean = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
             "PIP_CONFIG_FILE": os.devnull}
    installed = _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                     wheels[0], cwd=tmp_path, env=clean)
    assert installed.returncode == 0 and "Successfully installed" in installed.stdout, installed.stderr
    # The dependencies come from this interpreter's site-packages through a plain path line:
    # its .pth files (the checkout's editable install among them) are not processed there.
    (Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
               cwd=tmp_path, env=clean).stdout.strip()) / "deps-from-test-python.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    where = _run(python, "-c", "import rolesanywhere_hsm; print(rolesanywhere_hsm.__file__)", cwd=tmp_path, env=clean)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(env_dir)), where.stdout  # the wheel's copy, not ROOT's
    version = _run(env_dir / "bin" / "rolesanywhere-hsm", "--version", cwd=tmp_path, env=clean)
    assert version.returncode == 0 and version.stdout.strip() == __version__, version.stderr
    helped = _run(env_dir / "bin" / "rolesanywhere-hsm", "dev-ca", "--help", cwd=tmp_path, env=clean)
    assert helped.returncode == 0 and "TEST" in helped.stdout, helped.stderr
