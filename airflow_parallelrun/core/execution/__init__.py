"""Execution: the entry-script worker, the runner that drives it, the warm pool, the batch runner."""
