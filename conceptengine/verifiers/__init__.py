"""AI verifiers (MV, EV): renderings, prompts, backends, the ai_verify stage (verifiers/stage.py, which
registers itself when imported) and routing. The package imports no backend, so routing and the settings
load without torch."""

from conceptengine.verifiers.choices import EV, MV, ChoiceSet, p_accept, presence
from conceptengine.verifiers.routing import RoutingConfig, route, route_counts

__all__ = ["EV", "MV", "ChoiceSet", "RoutingConfig", "p_accept", "presence", "route", "route_counts"]
