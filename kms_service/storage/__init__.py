"""Persistence: SQLAlchemy models, engine set-up, migrations and the repository the services use."""
