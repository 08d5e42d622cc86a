"""The pure diff: what to change in an existing issue, and what to leave to people."""

from __future__ import annotations

from datetime import date

from tminus.domain.issues import (
    BLOCKED_LABEL,
    DROPPED_LABEL,
    IssueState,
    block_change,
    carry_ticks,
    compose_description,
    diff_issue,
    drop_write,
    fill_refs,
    split_description,
)
from tminus.domain.plan import IssueRole, IssueSpec
from tminus.domain.results import Outcome

SPEC = IssueSpec(
    key="demo/activity/blog-post",
    role=IssueRole.activity,
    title="Launch blog post: Demo",
    description="Write it.\n\n- [ ] Outline — due 2027-01-01\n- [ ] Draft",
    labels=("launch", "launch::demo", "launch-tier::L2"),
    due_date=date(2027, 1, 1),
    assignee="ada",
    activity_key="blog-post",
)


def state(**changes) -> IssueState:
    base = IssueState(
        iid=7,
        web_url="http://x/-/issues/7",
        title=SPEC.title,
        description=compose_description(SPEC.description, SPEC.key),
        labels=SPEC.labels,
        due_date=SPEC.due_date,
        assignee_ids=(3,),
        state="opened",
        key=SPEC.key,
    )
    return IssueState(**{**base.__dict__, **changes})


def test_equal_issue_needs_no_write() -> None:
    write = diff_issue(SPEC, state(), managed=SPEC.description, assignee_id=3)
    assert write.is_empty()


def test_only_drifted_fields_are_written() -> None:
    write = diff_issue(
        SPEC,
        state(title="Old", due_date=date(2026, 12, 1)),
        managed=SPEC.description,
        assignee_id=3,
    )
    assert write.title == SPEC.title
    assert write.due_date == SPEC.due_date
    assert write.description is None and write.assignee_ids is None
    assert write.changed_fields() == ["title", "due_date"]


def test_people_ticks_and_notes_survive_a_rewrite() -> None:
    people = compose_description(
        "Old text.\n\n- [x] Outline — due 2026-12-01\n- [ ] Draft", SPEC.key, "\n\nMy notes"
    )
    write = diff_issue(SPEC, state(description=people), managed=SPEC.description, assignee_id=3)
    assert write.description is not None
    managed, key, tail = split_description(write.description)
    assert key == SPEC.key
    assert "- [x] Outline — due 2027-01-01" in managed  # ticked, with the new date
    assert "- [ ] Draft" in managed
    assert tail == "\n\nMy notes"


def test_ticks_alone_are_not_drift() -> None:
    ticked = compose_description(SPEC.description.replace("[ ] Draft", "[x] Draft"), SPEC.key)
    assert diff_issue(
        SPEC, state(description=ticked), managed=SPEC.description, assignee_id=3
    ).is_empty()


def test_managed_labels_are_replaced_others_kept() -> None:
    labels = ("launch", "launch::demo", "launch-tier::L1", "customer-request")
    write = diff_issue(SPEC, state(labels=labels), managed=SPEC.description, assignee_id=3)
    assert write.add_labels == ("launch-tier::L2",)
    assert write.remove_labels == ("launch-tier::L1",)


def test_a_person_reassigning_is_not_drift_but_an_empty_assignee_is_filled() -> None:
    assert diff_issue(
        SPEC, state(assignee_ids=(99,)), managed=SPEC.description, assignee_id=3
    ).is_empty()
    write = diff_issue(SPEC, state(assignee_ids=()), managed=SPEC.description, assignee_id=3)
    assert write.assignee_ids == (3,)


def test_closed_means_done_unless_tminus_dropped_it() -> None:
    assert diff_issue(
        SPEC, state(state="closed"), managed=SPEC.description, assignee_id=3
    ).is_empty()
    dropped = state(state="closed", labels=(*SPEC.labels, DROPPED_LABEL))
    write = diff_issue(SPEC, dropped, managed=SPEC.description, assignee_id=3)
    assert write.state_event == "reopen"
    assert write.remove_labels == (DROPPED_LABEL,)


def test_drop_closes_once() -> None:
    write = drop_write(state())
    assert write is not None and write.state_event == "close"
    assert write.add_labels == (DROPPED_LABEL,)
    assert drop_write(state(state="closed")) is None


def test_description_without_marker_is_all_managed() -> None:
    assert split_description("hand written") == ("hand written", None, "")


def test_carry_ticks_matches_text_before_the_dash() -> None:
    assert (
        carry_ticks("- [ ] A — new\n- [ ] B", "- [x] A — old\n- [ ] B") == "- [x] A — new\n- [ ] B"
    )


def test_fill_refs() -> None:
    text = "see [[ref:demo/activity/a]] and [[ref:demo/activity/b]]"
    assert fill_refs(text, {"demo/activity/a": 4}) == "see #4 and (issue not created yet)"


# --- what shows that an issue waits for others --------------------------------------------

SOCIAL = SPEC.model_copy(
    update={
        "key": "demo/activity/social-promotion",
        "depends_on": ("demo/activity/marketing-review", "demo/activity/legal-review"),
    }
)


def deps(review: str = "opened", legal: str = "opened", **kw) -> dict[str, IssueState]:
    return {
        "demo/activity/marketing-review": state(iid=3, state=review, **kw),
        "demo/activity/legal-review": state(iid=4, state=legal),
    }


def test_blocking_links_are_made_once() -> None:
    change = block_change(SOCIAL, state(), deps(), linked=set())
    assert (change.blockers, change.link, change.unlabel) == ((3, 4), (3, 4), False)
    assert change.planned().outcome is Outcome.created
    again = block_change(SOCIAL, state(), deps(), linked={3, 4})
    assert again.link == () and again.planned().outcome is Outcome.unchanged
    assert again.planned().detail == "blocked by #3, #4"


def test_a_closed_dependency_blocks_nothing_and_a_dropped_one_comes_back() -> None:
    assert block_change(SOCIAL, state(), deps(review="closed"), set()).blockers == (4,)
    reopening = deps(review="closed", labels=(DROPPED_LABEL,))
    assert block_change(SOCIAL, state(), reopening, set()).blockers == (3, 4)
    done = block_change(SOCIAL, state(state="closed"), deps(), set())
    assert done.blockers == () and done.planned().outcome is Outcome.unchanged


def test_the_fallback_label_stays_while_blocked_and_goes_after() -> None:
    labelled = state(labels=(*SPEC.labels, BLOCKED_LABEL))
    # Labelled: this GitLab has no blocking links; it is not asked again.
    waiting = block_change(SOCIAL, labelled, deps(), linked=set())
    assert waiting.link == () and waiting.planned().outcome is Outcome.unchanged
    free = block_change(SOCIAL, labelled, deps(review="closed", legal="closed"), set())
    assert free.unlabel and free.planned().outcome is Outcome.updated
