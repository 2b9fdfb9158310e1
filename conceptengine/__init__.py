"""conceptengine: a data engine for Promptable Concept Segmentation datasets (SA-Co style)."""

__version__ = "0.1.0"
