"""Imported by the model sandbox's fork server (``sandbox._PRELOAD``), and only there: builds
the model-file allow-lists once (about 2 s: they import every scikit-learn estimator), so every
worker forked from it starts with them built instead of building them on its first model."""
from learnware_core.modelfile import allow_lists

allow_lists()
