"""Run the Alembic migrations programmatically (``telenet db upgrade``) on SQLite or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncConnection

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str, *, schema: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(url: str, revision: str = "head", *, schema: str | None = None) -> None:
    """Bring the database at ``url`` to ``revision`` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(url, schema=schema), revision)


async def upgrade_connection(connection: AsyncConnection, revision: str = "head") -> None:
    """Upgrade through an existing async connection (used by tests and the app's first start)."""

    def _run(sync_connection: object) -> None:
        cfg = alembic_config("sqlite://")
        cfg.attributes["connection"] = sync_connection
        command.upgrade(cfg, revision)

    await connection.run_sync(_run)
