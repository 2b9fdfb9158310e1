"""Composition: the round's steps in order (image.py), the commands around a run, and the media sources they
run on. Importing the package registers every source it ships: `media.source: sim` comes from demo.py."""

from conceptengine.pipelines import demo  # noqa: F401 - registers media.source "sim"
