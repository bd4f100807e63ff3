"""Alembic migrations of tracer's schema (a package so an installed tracer can find them)."""
