"""The one exception padless raises for a problem the user can fix: :class:`UserError`.

The rule (``docs/reliability.md``): when padless checks what it was given (an option, a
config value, a corpus, a prepared dataset, a run directory, a checkpoint) or the
environment (a device, a lock), and finds it wrong, it raises ``UserError`` with one line
that names the thing and says how to fix it. ``padless.cli.main`` prints that line and exits
2; it does the same for ``OSError`` (a missing file, a permission, a full disk). Any other
exception is a bug, and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input or environment, explained in one line (the file, option or key it is about).

    A ``ValueError``, so code that catches ``ValueError`` around a padless call keeps working.
    """
