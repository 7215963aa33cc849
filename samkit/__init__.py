"""samkit: a fast, safe, standalone toolkit for the Segment Anything Model family."""

__version__ = "0.1.0"
