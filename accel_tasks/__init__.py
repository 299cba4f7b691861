"""accel_tasks: one Accelerate/DeepSpeed loop, task recipes plugged into it."""

__version__ = "0.1.0"
