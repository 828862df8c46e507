"""Persistence: SQLAlchemy models, the database (engines, sessions), running the migrations (their revisions
are ``migrations/`` at the top of the tree) and the repository the services use."""

# Seconds a statement waits for a lock another transaction holds (SQLite's write lock, a PostgreSQL row or
# table lock), or for a pooled connection, before the request gets a 503 "database busy" (--database-lock-timeout).
# Here, not in database.py, so the settings table (read by every command at start-up) needs no database library.
DEFAULT_LOCK_TIMEOUT = 5.0
