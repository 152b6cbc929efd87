"""`davit`, the command-line client: one module per command, all reading the same log."""
