"""The project's own error type: one line that names the file or value and says how to fix it.

The CLI prints `MrcnnError` messages without a traceback (``--debug`` shows it); every other
exception is a bug and keeps its traceback.
"""


class MrcnnError(Exception):
    """A user-facing error: bad input, a missing file, an invalid setting."""


class ConfigError(MrcnnError, ValueError):
    """An invalid Config attribute (names the attribute, the value and the fix)."""


class DatasetError(MrcnnError):
    """A dataset file or folder that cannot be used (names the file and the fix)."""


class WeightsError(MrcnnError):
    """A weight file that cannot be loaded into this model (names the file and the fix)."""
