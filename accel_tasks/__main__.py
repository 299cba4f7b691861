from accel_tasks.run import entry

entry()
