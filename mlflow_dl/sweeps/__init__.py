"""Sweeps: a parent run with one nested child per trial."""
