"""The MariaDB/MySQL kinds: `mysql.backup` and `mysql.restore` (PyMySQL, text protocol)."""
