"""SAM 3 in the engine. Importing the package registers the demo's convolutional backbone with the
transformers Auto classes, so every loader here reads checkpoints built with it."""

from conceptengine.model import conv_backbone

conv_backbone.register()
