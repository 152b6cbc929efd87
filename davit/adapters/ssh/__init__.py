"""SSH access to other hosts (asyncssh), for migrations."""
