"""Notifications through apprise: reading the targets' URLs (`targets.py`), one delivery in a
thread with a time limit and a redacted reason (`sender.py`), and the daemon task that derives
what is owed from the event log and delivers it without ever holding up a run (`service.py`)."""
