"""What the application stands on: atomic files, locks, the device, CPU threads, the
user-error type.

Nothing here knows about data, models or training; every other application folder may use it.
"""
