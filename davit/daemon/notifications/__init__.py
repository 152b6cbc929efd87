"""Notifications through apprise: reading the targets' URLs (`targets.py`), one delivery in a
child process with a deadline and a redacted reason (`sender.py`, `child.py`), and the daemon task that derives
what is owed from the event log and delivers it without ever holding up a run (`service.py`)."""
