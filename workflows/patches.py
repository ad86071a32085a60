"""Every ``workflow.patched`` decision RideWorkflow makes, in one place
(docs/VERSIONING.md). A patch id is recorded in the history of every ride that took the
new path: the ids never change, and a decision is asked for at the same point of the
ride as when its history was recorded.
"""

from __future__ import annotations

from temporalio import workflow

# The driver is released before the fare is captured (formerly after).
RELEASE_BEFORE_CAPTURE = "release-driver-before-capture"
# The bookkeeping steps run as local activities (workflows/steps.py), the search
# attributes the trigger sets at start are not upserted again, and an assignment's
# driver and status go in one upsert (formerly: every step an activity, and more upserts).
LOCAL_BOOKKEEPING = "local-bookkeeping-steps"


class Patches:
    """The ride's patch decisions. Create it where the ride starts: that is where
    LOCAL_BOOKKEEPING is decided."""

    def __init__(self) -> None:
        self.local_steps = workflow.patched(LOCAL_BOOKKEEPING)

    def release_before_capture(self) -> bool:
        """Asked when the trip has ended. Rides with local steps came later: they always
        release first, and record no second patch."""
        return self.local_steps or workflow.patched(RELEASE_BEFORE_CAPTURE)
