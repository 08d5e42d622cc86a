"""The pure audit: blocked work, and whom its reminders go to."""

from __future__ import annotations

from datetime import date

from tminus.domain.audit import audit_launch, audit_note, reminder_body, reminders
from tminus.domain.issues import IssueState

TODAY = date(2027, 3, 20)


def issue(iid: int, name: str, due: date, who: str, state: str = "opened") -> IssueState:
    return IssueState(
        iid=iid,
        web_url=f"http://x/-/issues/{iid}",
        title=name,
        description="",
        labels=(),
        due_date=due,
        assignee_ids=(iid,),
        state=state,
        key=f"demo/activity/{name}",
        assignees=(who,),
    )


def audit(*issues: IssueState, **deps: tuple[str, ...]):  # type: ignore[no-untyped-def]
    depends_on = {
        f"demo/activity/{k}": tuple(f"demo/activity/{d}" for d in v) for k, v in deps.items()
    }
    return audit_launch(
        "demo", "Demo", date(2027, 3, 30), list(issues), TODAY, depends_on=depends_on
    )


def test_overdue_blocked_work_reminds_whoever_blocks_it_down_the_chain() -> None:
    social = issue(1, "social", date(2027, 3, 18), "dev.rel")
    review = issue(2, "review", date(2027, 3, 25), "rita")  # not overdue itself
    copy = issue(3, "copy", date(2027, 3, 25), "cole")
    result = audit(social, review, copy, social=("review",), review=("copy",))
    assert [(b.issue.iid, [d.iid for d in b.by]) for b in result.blocked] == [(1, [2]), (2, [3])]
    (nag,) = reminders(result)
    assert nag.issue.iid == 3 and nag.late is None  # the root of the chain: copy
    assert [o.issue.iid for o in nag.holding_up] == [1]
    body = reminder_body(nag, "priya", TODAY)
    assert "@cole reminder" in body and "#1 social waits for this" in body
    assert "| blocked | 2 |" in audit_note(result, "priya")


def test_closed_dependencies_block_nothing_and_late_work_nags_its_owner() -> None:
    social = issue(1, "social", date(2027, 3, 18), "dev.rel")
    review = issue(2, "review", date(2027, 3, 10), "rita", state="closed")
    result = audit(social, review, social=("review",))
    assert result.blocked == []
    (nag,) = reminders(result)
    assert nag.issue.iid == 1 and nag.late == 2 and nag.holding_up == ()
    assert reminder_body(nag, "priya", TODAY).splitlines()[1].startswith("@dev.rel reminder")


def test_one_reminder_per_issue_for_its_own_lateness_and_what_it_holds_up() -> None:
    social = issue(1, "social", date(2027, 3, 18), "dev.rel")
    email = issue(2, "email", date(2027, 3, 19), "mo")
    review = issue(3, "review", date(2027, 3, 6), "rita")
    result = audit(social, email, review, social=("review",), email=("review",))
    (nag,) = reminders(result)
    assert nag.issue.iid == 3 and nag.late == 14
    assert [o.issue.iid for o in nag.holding_up] == [1, 2]
