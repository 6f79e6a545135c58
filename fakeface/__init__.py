"""fakeface: detect fake face images. See README.md; the command line is `fakeface --help`."""

__version__ = "0.1.0"
