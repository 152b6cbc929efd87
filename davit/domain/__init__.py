"""The pure model of davit: job specs, events, the run machine, plans, ports and errors.

Nothing here performs I/O, reads a clock or draws random numbers; callers pass those in.
"""
