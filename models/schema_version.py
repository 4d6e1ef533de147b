"""The schema revision the code expects (Alembic head) and the one the database is at."""

from __future__ import annotations

from functools import cache

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from .search import is_full_text_object
from .settings import PROJECT_ROOT

ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@cache
def code_head() -> str | None:
    """The newest revision of the migration chain shipped with this code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def database_revision(connection: Connection) -> str | None:
    """The revision stamped in the database (None when it was never migrated)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.scalar(text("SELECT version_num FROM alembic_version"))


def include_name(name: str | None, type_: str, _parent_names: dict) -> bool:
    """Alembic autogenerate filter: leave out the full-text search objects (the FTS5 tables and
    their shadow tables on SQLite, the expression indexes on PostgreSQL), which the models do
    not describe and which their migration writes by hand."""
    return not (type_ in {"table", "index"} and is_full_text_object(name))
