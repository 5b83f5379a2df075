"""The one error type the CLI turns into a one-line message and a non-zero exit."""


class ExportError(Exception):
    """A user-facing failure. The message names the file or field at fault, on one line."""
