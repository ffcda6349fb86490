"""The one error of the data sources: data that cannot be used as asked, said in one line.

The scripts report it as they report a bad flag (exit code 2)."""


class DataError(ValueError):
    """A clips file, video or request for clips that cannot be used: one line for the user."""
