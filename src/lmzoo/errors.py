"""User-facing errors."""


class LmzooError(ValueError):
    """A user-facing error: one line naming the problem and the fix."""
