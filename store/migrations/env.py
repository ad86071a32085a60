"""Alembic environment: migrates the database ``ridehail db upgrade`` was pointed at."""

from __future__ import annotations

from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from store import tables
from store.db import make_engine
from store.migrate import compared

config = context.config
target_metadata = SQLModel.metadata


def render_item(kind: str, obj: object,
                autogen_context: AutogenContext) -> str | Literal[False]:
    """Write column types as plain SQLAlchemy types, so migrations never import the
    models (a migration must keep working after the models move on)."""
    if kind == "type" and isinstance(obj, tables.UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and type(obj).__name__ == "AutoString":
        length = getattr(obj, "length", None)
        return f"sa.String(length={length})" if length else "sa.String()"
    return False


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    # batch mode lets the same migrations alter tables on SQLite
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True, compare_type=True, render_item=render_item,
                      include_object=compared(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:  # store.migrate holds a lock on it
        run_on(given)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        run_on(connection)
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
