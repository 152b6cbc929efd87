"""Moved to davit.adapters.parallel (shared by the mongo and PostgreSQL kinds); this name is
kept so that branches written against it still import (the MySQL kind's does)."""

from davit.adapters.parallel import Relay, run_parallel

__all__ = ["Relay", "run_parallel"]
