"""The lock: its typed model, the file on disk, the world now as lock-shaped data (snapshot), drift (lock vs world)
and diff (lock vs lock)."""
