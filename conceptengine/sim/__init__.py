"""The RENDERED demo domain: procedurally drawn shapes with exact ground truth.

Not real photography. It exists so the whole data-engine loop runs offline on a laptop and its effect
can be measured exactly: `build_world` renders images with occlusion, clutter, scale changes and
crowds; `Oracle` answers any noun phrase exhaustively; `OracleCaptioner` plays the captioner.
"""

from conceptengine.sim.captioner import OracleCaptioner
from conceptengine.sim.oracle import Oracle
from conceptengine.sim.world import DOMAIN, SHIFTED_DOMAIN, World, build_world

__all__ = ["DOMAIN", "SHIFTED_DOMAIN", "Oracle", "OracleCaptioner", "World", "build_world"]
