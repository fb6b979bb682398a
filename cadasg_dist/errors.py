"""The exceptions a caller can catch.

Every user-facing error is a ``CADASGError`` (a ``ValueError``), so the CLI turns any of them into
one line and exit code 2. Messages name the bad value and how to fix it.
"""

from __future__ import annotations


class CADASGError(ValueError):
    """Base class of every error the library raises for bad input or bad state."""


class ConfigError(CADASGError):
    """A configuration value is missing, unknown or out of range."""


class InvalidDataError(CADASGError):
    """The table cannot be read or does not fit the schema (empty, unknown column, identifier...)."""


class ContextError(CADASGError):
    """A context column or value is unknown to the model."""


class ArtifactError(CADASGError):
    """A saved model directory is missing, tampered with, or written by something else."""


class PrivacyBudgetError(CADASGError):
    """The requested (epsilon, delta) cannot be met, or would be exceeded."""
