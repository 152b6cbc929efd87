"""The append-only event log on SQLAlchemy 2 async + aiosqlite (see `davit/eventstore/sqlite.py`)."""
