"""The human-review settings: the queue's URL, leases and tokens, consensus, the cost model, simulated reviewers.

A pydantic model only, so the run config embeds it (its `review:` section) and the review server validates
just this section of a run's snapshot, without the engine's config.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conceptengine.review.cost import CostModel


class ReviewSettings(BaseModel):
    """The run config's `review:` section."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None  # SQLAlchemy URL; default sqlite:///RUN/review.db
    simulated_reviewers: int = Field(2, ge=0)
    error_rate: float = Field(0.03, ge=0, le=1)
    lease_ttl_s: float = Field(120.0, gt=0)
    # The review app's limits per reviewer: tasks held at once (a page holds two: the one on screen and the
    # next), the longest lease or renewal a client may ask for, and the longest one reviewer may keep a task
    # by renewing it, counted from when they leased it. One reviewer could otherwise lease the whole queue
    # for hours, or keep one task forever.
    max_leased_per_reviewer: int = Field(10, ge=1)
    max_lease_ttl_s: float = Field(1800.0, gt=0)
    max_lease_span_s: float = Field(7200.0, gt=0)
    # A reviewer's token stops working this long after it was issued (`review add-user NAME --replace`
    # issues a new one); replacing or disabling it takes effect at once.
    token_ttl_days: float = Field(30.0, gt=0)
    # Real reviewers: how long a round waits for its queue before left-overs roll to the next round.
    deadline_s: float | None = Field(None, gt=0)
    poll_s: float = Field(2.0, gt=0)
    cost: CostModel = CostModel()
    # Consensus: each MV / EV item is answered by k different reviewers; disagreements go to an admin.
    consensus_k: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _enough_simulated_reviewers(self) -> ReviewSettings:
        if 0 < self.simulated_reviewers < self.consensus_k:
            raise ValueError(
                f"review.simulated_reviewers: {self.simulated_reviewers} cannot give each item "
                f"review.consensus_k={self.consensus_k} different reviewers; use at least {self.consensus_k}"
            )
        return self
