"""The random-feature sketch lives in :mod:`learnware_core.sketch` (the private-search client
ranks with the same features as the index); this name is kept for existing imports."""
from learnware_core.sketch import RFFSketch  # noqa: F401

__all__ = ["RFFSketch"]
