"""One tenant run: lookup -> observe -> plan -> apply -> record; plan files and snapshots."""
