"""The subcommands of ``padless``: one module each, with ``add_arguments(parser)`` and
``run(args) -> int``. A command parses its options, calls a documented function of the
application, and prints; the work is never here.
"""
