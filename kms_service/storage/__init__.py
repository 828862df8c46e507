"""Persistence: SQLAlchemy models, the database (engines, sessions), running the migrations (their revisions
are ``migrations/`` at the top of the tree) and the repository the services use."""
