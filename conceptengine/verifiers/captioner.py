"""A live captioner: an image-text-to-text model (the verifiers' transformers backend) describes each image,
and the noun phrases the ontology can parse in that description become NP proposal's positive candidates.
SA-Co's data engine captions with an MLLM the same way; `ontology.captioner: model` selects it."""

from __future__ import annotations

from PIL import Image

from conceptengine.engine.media import load_rgb
from conceptengine.ontology.graph import ConceptGraph
from conceptengine.verifiers.transformers_backend import TransformersBackend

CAPTION_PROMPT = "List every object you see in this image, each with its colour and pattern."


class ModelCaptioner:
    origin = "caption"

    def __init__(
        self,
        model_path: str,
        graph: ConceptGraph,
        device: str = "cpu",
        prompt: str = CAPTION_PROMPT,
        max_new_tokens: int = 48,
    ):
        self.backend = TransformersBackend(model_path, device=device, batch_size=1)
        self.graph, self.prompt, self.max_new_tokens = graph, prompt, max_new_tokens
        self.last_text = ""  # the model's raw description of the last image (for logs and tests)

    def caption(self, media_id: str, uri: str | None = None) -> list[str]:
        if uri is None:
            raise ValueError(f"ModelCaptioner needs the image's URI to caption media {media_id}")
        image = Image.fromarray(load_rgb(uri))
        self.last_text = self.backend.generate([[image]], [self.prompt], self.max_new_tokens)[0]
        return self.graph.noun_phrases_in(self.last_text)
