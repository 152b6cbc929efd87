"""files.backup and files.restore: directory trees through the repository."""
