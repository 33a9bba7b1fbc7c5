"""Exceptions raised by metaal.

Every error that a user can cause (bad data, a bad configuration, a bad label, a bad policy file)
is a subclass of :class:`MetaalError`, so the command line prints it as one clear line and exits
with a non-zero status instead of showing a traceback from deep inside numpy.
"""
from __future__ import annotations


class MetaalError(ValueError):
    """Base class of every user-facing metaal error."""


class DataError(MetaalError):
    """A dataset, a split or a features file is malformed (shapes, NaN, labels, classes, size)."""


class ConfigError(MetaalError):
    """A configuration, a command-line option or a strategy name is invalid."""


class LabelError(MetaalError):
    """A label given by a person or an oracle is invalid (unknown class, unknown id, conflict)."""


class PolicyError(MetaalError):
    """A learned policy file is missing, corrupt, or of another observation version."""
