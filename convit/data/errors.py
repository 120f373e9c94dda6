"""The data layer's error type: user-fixable problems (missing folder, too few images)."""


class DataError(ValueError):
    """The data a trial asks for cannot be found or does not fit the config; the message says how to fix it."""
