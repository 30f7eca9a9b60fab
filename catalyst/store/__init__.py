"""Persistence: SQLAlchemy models, Alembic migrations, repository functions."""
