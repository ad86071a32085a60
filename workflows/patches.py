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
# The ride is judged on the facts the api committed, not on when the workflow hears of
# them (formerly: on workflow.now() at delivery, and on the driver's word for the fare):
# a cancellation already in the inbox ends the ride before its first step; the fee's
# free window is measured to the cancel's event time; an offer the driver accepted
# before it expired is honoured however late the accept arrives; the fare is settled
# against the trip meter; a trip in progress that is cancelled is charged what the meter
# says so far; the offer timer carries a summary.
COMMITTED_FACTS = "judged-on-committed-facts"


class Patches:
    """The ride's patch decisions. Create it where the ride starts: that is where
    LOCAL_BOOKKEEPING and COMMITTED_FACTS are decided (in that order: the first marker
    of a new ride's history is LOCAL_BOOKKEEPING's)."""

    def __init__(self) -> None:
        self.local_steps = workflow.patched(LOCAL_BOOKKEEPING)
        self.committed_facts = workflow.patched(COMMITTED_FACTS)

    def release_before_capture(self) -> bool:
        """Asked when the trip has ended. Rides with local steps came later: they always
        release first, and record no second patch."""
        return self.local_steps or workflow.patched(RELEASE_BEFORE_CAPTURE)
