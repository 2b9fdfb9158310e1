"""SAM 3 in the engine. `conv_backbone` registers the demo's convolutional backbone with the transformers Auto
classes when it is imported, which every SAM 3 loader here does (through `processing`)."""
