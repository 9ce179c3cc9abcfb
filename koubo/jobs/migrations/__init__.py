"""Alembic's migrations of the job database; koubo/jobs/schema.py runs them at startup."""
