"""Stages of a round. Each module has pure functions over Arrow tables (testable without Ray)
and, where the stage needs the cluster, a thin wrapper that calls a backend."""
