"""Which SAM 3 version is promoted, derived from the run's own manifests.

The promote steps' manifests are the source of truth (they are written atomically, after the decision);
`RUN/models/registry.json` is a readable view rebuilt from them after every round, never read back to
decide anything, so a crash between the two cannot leave them disagreeing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from conceptengine.engine.round_steps import Step
from conceptengine.engine.store import StepRef
from conceptengine.round.context import RunContext

INITIAL = "v0000"


@dataclass(frozen=True)
class ModelVersion:
    name: str  # v0000 is the configured checkpoint; vNNNN was trained after round NNNN
    path: str
    round: int
    parent: str | None = None

    @property
    def key(self) -> str:
        """What proposals record and fingerprints depend on."""
        return f"sam3/{self.name}"


def initial_version(ctx: RunContext) -> ModelVersion:
    return ModelVersion(INITIAL, ctx.sam3_path, 0)


def candidate_rel(r: int) -> str:
    """Where round r's candidate lives in the run directory."""
    return f"models/sam3/v{r:04d}"


def candidate_dir(ctx: RunContext, r: int) -> str:
    """The local directory round r's candidate is trained into (published to candidate_rel when done)."""
    return ctx.store.workdir(candidate_rel(r))


def promoted_at_start_of(ctx: RunContext, r: int) -> ModelVersion:
    """The version round r proposes with: the last one promoted in rounds before r."""
    current = initial_version(ctx)
    for past in range(1, r):
        m = ctx.store.manifest(StepRef(past, Step.PROMOTE))
        if m and m.get("extra", {}).get("promoted"):
            e = m["extra"]
            current = ModelVersion(e["candidate"], e["candidate_path"], past, parent=e["base"])
    return current


def write_registry_view(ctx: RunContext, upto_round: int) -> None:
    versions = [asdict(initial_version(ctx)) | {"promoted_in_round": 0}]
    for r in range(1, upto_round + 1):
        m = ctx.store.manifest(StepRef(r, Step.PROMOTE))
        if not m:
            continue
        e = m["extra"]
        versions.append(
            {
                "name": e["candidate"],
                "path": e["candidate_path"],
                "round": r,
                "parent": e["base"],
                "gold_cgF1": e["candidate_cgF1"],
                "base_gold_cgF1": e["base_cgF1"],
                "promoted_in_round": r if e["promoted"] else None,
            }
        )
    ctx.store.write_json(
        "models/registry.json",
        {"sam3": {"promoted": promoted_at_start_of(ctx, upto_round + 1).name, "versions": versions}},
    )
