"""Approvals: an asset that waits for a person before it goes on.

``context.require_approval(message, ...)`` stops the step until someone decides. Waiting is a
state, not an error: the step is recorded ``waiting_approval``, one approval request is written to
``flowstone_approvals`` (with the message, context data for the reviewer, who may decide and what
happens on timeout), and everything downstream waits. After an approval the step runs again from
the start and ``require_approval`` returns the decision (who, when, why); after a rejection the
step ends ``rejected`` and its downstream ``skipped``.

``@fs.asset(approval=fs.ApprovalGate(message=...))`` is the declarative form: it asks before the
function runs at all (``examples/demo.py`` uses it).

Decide with the API (below) or the command line::

    flowstone approvals list --defs examples.approvals:defs
    flowstone approvals approve 42 --by alice --reason "totals checked" --defs examples.approvals:defs

Approvals are rows in Postgres: this example uses ``FLOWSTONE_DATABASE_URL``, else the embedded
Postgres. Run it with ``python examples/approvals.py``; it can run any number of times.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import flowstone as fs


@fs.asset
def draft_invoices() -> list[dict[str, object]]:
    """The invoices of the month, ready to send."""
    return [
        {"customer": "ada", "amount": Decimal("120.00")},
        {"customer": "bob", "amount": Decimal("80.50")},
        {"customer": "cyd", "amount": Decimal("1999.99")},
    ]


@fs.asset
def sent_invoices(context: fs.AssetContext, draft_invoices: list[dict[str, object]]) -> dict[str, object]:
    """Send the invoices, once finance has looked at them."""
    total = sum((Decimal(str(i["amount"])) for i in draft_invoices), Decimal(0))
    decision = context.require_approval(
        f"Send {len(draft_invoices)} invoices?",
        context_data={"invoices": len(draft_invoices), "total": str(total)},  # shown to the reviewer
        approvers=["finance-lead", "cfo"],  # only they may decide
        timeout=timedelta(hours=4),  # after 4 hours without a decision...
        on_timeout="reject",  # ...reject (as the actor "system")
    )
    # Reached only after an approval: the step ran again from the start.
    return {"sent": len(draft_invoices), "total": total, "approved_by": decision.decided_by}


defs = fs.Definitions(assets=[draft_invoices, sent_invoices])


def main() -> object:
    """Materialize up to the gate, approve through the API, resume; return the gated value."""
    with fs.FlowStone(defs) as runtime:
        run = runtime.materialize("sent_invoices", with_upstream=True, raise_on_error=False)
        print(f"run {run.run_id}: {run.status}")
        for step in run.steps:
            print(f"  {step.asset:<15} {step.status}")

        # The request of this run (other runs may be waiting too).
        (approval,) = [a for a in runtime.approvals.list() if a.run_id == run.run_id]
        print(f"approval {approval.id}: {approval.message} {approval.context_data}")
        who = ", ".join(approval.approvers or ())
        print(f"  may decide: {who}; on timeout ({approval.timeout_at:%H:%M} UTC): {approval.on_timeout}")

        # Someone not in `approvers` is refused; a listed approver decides.
        try:
            runtime.approvals.approve(approval.id, by="intern")
        except fs.NotAllowedError as exc:
            print(f"refused: {exc.message}")
        decided = runtime.approvals.approve(approval.id, by="finance-lead", reason="totals checked")
        print(f"approval {decided.id}: {decided.status} by {decided.decided_by} ({decided.reason})")

        # An in-process run continues with resume() (a queued run continues on its own, on workers).
        resumed = runtime.resume(run.run_id)
        value = resumed.value("sent_invoices")
        print(f"run {resumed.run_id}: {resumed.status}; sent_invoices = {value}")
        return value


if __name__ == "__main__":
    main()
