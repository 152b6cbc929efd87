"""The data work: each package implements ports declared in `domain/ports.py`."""
