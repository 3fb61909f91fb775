"""User-facing errors.

Every error raised for bad input names the file or argument and the problem, so
a researcher can fix it without reading a stack trace from inside torch.
"""

from __future__ import annotations


class EmlError(Exception):
    """Base class of the errors eml raises for bad input or configuration."""


class ImageError(EmlError):
    """An image file cannot be used (missing, unreadable, truncated, too small...)."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ArgumentError(EmlError):
    """A function or command-line argument is out of its domain."""

    def __init__(self, argument: str, problem: str):
        self.argument = argument
        self.problem = problem
        super().__init__(f"{argument}: {problem}")


class ModelError(EmlError):
    """A model spec, checkpoint or model weights cannot be used."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights are neither cached nor downloadable."""


class UnsupportedHeadError(EmlError):
    """The closed-form decomposition does not know a layer of the head."""
