"""davit: backups, restores and Docker Compose migrations as resumable state machines.

The four layers live here as subpackages: `davit.domain` (pure model), `davit.eventstore`
(the event log), `davit.adapters` (the data work) and `davit.daemon` (davitd and the CLI).
One top-level name keeps `pip install .` from shadowing other projects' `domain` or `daemon`.
"""
