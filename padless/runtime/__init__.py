"""What the application stands on: atomic files, the device it runs on, CPU threads.

Nothing here knows about data, models or training; every other application folder may use it.
"""
