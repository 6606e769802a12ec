"""The layering is a checked rule: the contracts pass, and an import that climbs back up fails them.

`lint-imports` runs in `make test` too; these tests prove the contracts can fail, by running
them over a copy of the package with one wrong import added.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import imgbatch

PACKAGE = Path(imgbatch.__file__).parent
PYPROJECT = PACKAGE.parents[1] / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports with the project's contracts over the `imgbatch` found under `root`."""
    config = root / "pyproject.toml"
    if not config.exists():
        shutil.copy(PYPROJECT, config)
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(config), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "imgbatch", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_contracts_hold(package_copy: Path) -> None:
    result = lint(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        # a pure module reaching an adapter
        ("imaging/compress.py", "import imgbatch.storage", "Pure core"),
        # a pure module reaching an I/O library
        ("catalogue/parsing.py", "import sqlalchemy", "Pure core"),
        # an adapter climbing up to a service
        ("ledger/operations.py", "import imgbatch.jobs", "Layers"),
        # a service climbing up to a way in
        ("jobs/pipeline.py", "import imgbatch.api", "Layers"),
        # two independent services importing each other
        ("reports/status.py", "import imgbatch.intake", "Layers"),
    ],
)
def test_an_import_that_climbs_up_fails(
    package_copy: Path, module: str, wrong_import: str, contract: str
) -> None:
    path = package_copy / "imgbatch" / module
    path.write_text(path.read_text() + f"\n{wrong_import}  # deliberately wrong\n")
    result = lint(package_copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert contract in result.stdout.split("Broken contracts")[-1]
