"""What the application stands on: atomic files and the device it runs on.

Nothing here knows about data, models or training; every other application folder may use it.
"""
