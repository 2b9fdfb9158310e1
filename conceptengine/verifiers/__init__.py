"""AI verifiers (MV, EV): renderings, prompts, backends, the ai_verify stage and routing.

Importing the package registers the `ai_verify` stage; the transformers backend (and torch) load
only when the stage's `setup()` runs, so routing stays importable without a model.
"""

from conceptengine.verifiers import stage as _stage  # noqa: F401  (registers ai_verify)
from conceptengine.verifiers.choices import EV, MV, ChoiceSet, p_accept, presence
from conceptengine.verifiers.routing import RoutingConfig, route, route_counts

__all__ = ["EV", "MV", "ChoiceSet", "RoutingConfig", "p_accept", "presence", "route", "route_counts"]
