"""Persistence: the database engine, the tables and the schema migrations."""
