"""The commands (check, generate, verify, diff, outdated, fleet, guard): orchestration over sources, inspect, compat
and lock; each returns data, the CLI prints."""
