"""The layering contracts of pyproject.toml [tool.importlinter] hold (docs/architecture.md).

`make lint` runs them too; here a broken layer fails the suite as well.
"""

import subprocess
import sys
from pathlib import Path

from django.conf import settings


def test_import_linter_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
