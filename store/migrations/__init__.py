"""Alembic migrations of ridehail's tables (``ridehail db upgrade``)."""
