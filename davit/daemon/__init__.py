"""The process: `davitd` (supervisor, watcher, scheduler, executor, systemd notify) and `davit`."""
