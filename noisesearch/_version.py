"""The package's version, on its own so that any module may record it without importing the package's front door."""

__version__ = "0.1.0"
