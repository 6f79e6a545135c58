"""The one error type for problems a user can cause or fix (bad file, unknown model, missing weights)."""


class FakefaceError(Exception):
    """A user-facing error: its message says what went wrong and what to do.

    The CLI and the app show the message as it is, never a traceback.
    """


class TooLargeError(FakefaceError):
    """The input is over a size limit (bytes, pixels, files in a batch): HTTP 413 rather than 400."""


class UnsupportedFormatError(FakefaceError):
    """The input is not an image in an accepted format: HTTP 415 rather than 400."""
