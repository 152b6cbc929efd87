"""Docker volumes: backup and restore through the files machinery."""
