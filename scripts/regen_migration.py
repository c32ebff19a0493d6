"""Regenerate the initial Alembic revision from the models (only while no release has shipped it).

Usage: .venv/bin/python scripts/regen_migration.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from telenet.store.migrate import MIGRATIONS_DIR, alembic_config

target = MIGRATIONS_DIR / "versions" / "0001_initial_schema.py"
with tempfile.TemporaryDirectory() as tmp:
    target.unlink(missing_ok=True)
    command.revision(
        alembic_config(f"sqlite+aiosqlite:///{tmp}/gen.db"), message="initial schema", autogenerate=True, rev_id="0001"
    )
text = re.sub(r"Create Date: .*", "Create Date: 2026-11-23", target.read_text(encoding="utf-8"))
target.write_text(text, encoding="utf-8")
ruff = Path(sys.executable).parent / "ruff"
subprocess.run([str(ruff), "format", "-q", str(target)], check=True)
subprocess.run([str(ruff), "check", "--fix", "--unsafe-fixes", "-q", str(target)], check=True)
print(f"wrote {target}")
