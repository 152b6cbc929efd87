"""Real test peers for davit: Docker Engines, a second host over SSH, FerretDB, Weaviate.

Run `python -m tests.peers up|down|status|logs` from the repository root; see README.md.
"""
