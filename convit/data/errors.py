"""The data layer's error type: user-fixable problems (missing folder, too few images)."""

from __future__ import annotations


class DataError(ValueError):
    """The data a trial asks for cannot be found or does not fit the config; the message says how to fix it.

    ``key`` names the config key to change (e.g. ``batch_size``, ``data_root``), so a sweep can point at the
    line that set it.
    """

    def __init__(self, message: str, key: str = "data_root"):
        super().__init__(message)
        self.key = key
