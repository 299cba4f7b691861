"""Example accel_tasks plugin: text classification."""
