"""Composition: the round's steps in order (image.py), the commands around a run, and the demo world's media
source (demo.py's `demo_sources`, the `conceptengine.sources` entry point "sim")."""
