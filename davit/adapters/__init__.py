"""The data work: each package implements ports declared in `davit/domain/ports.py`."""
