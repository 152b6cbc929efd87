"""compose.migrate: a compose project to another host over SSH, with rollback."""
