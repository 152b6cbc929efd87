"""The PostgreSQL adapter: postgres.backup and postgres.restore (psycopg 3, pg_dump, pg_restore)."""
