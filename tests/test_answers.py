"""The sister issue's answers: the form, reading it back, keeping it, and filling the kit."""

from __future__ import annotations

from datetime import date

from tminus.domain.answers import (
    ANSWER_MAX,
    PLACEHOLDER,
    answer_form,
    fill_kit,
    missing_form,
    read_answers,
    sister_answers,
    unanswered,
)
from tminus.domain.issues import IssueState, compose_description, diff_issue, split_description
from tminus.domain.plan import IssueRole, IssueSpec
from tminus.domain.planner import plan_launch
from tminus.domain.playbook import Playbook
from tminus.domain.request import LaunchRequest
from tminus.integrations.slack import as_markdown
from tminus.integrations.slack_blocks import sales_message

ENG = ["Who is it for?", "What pain does it solve?", "What are its current limitations?"]
PMM = ["What are the key selling points?"]
QUESTIONS = [*ENG, *PMM]
KIT = {
    "audience": "Who is it for?",
    "pain": "What pain does it solve?",
    "limitations": "What are its current limitations?",
    "selling_points": "What are the key selling points?",
}
TODAY = date(2026, 11, 22)


def answer(form: str, question: str, text: str) -> str:
    """``form`` with ``text`` typed in place of ``question``'s placeholder."""
    head = f"#### {question}\n\n{PLACEHOLDER}"
    assert head in form
    return form.replace(head, f"#### {question}\n\n{text}", 1)


def test_a_new_form_has_every_question_unanswered() -> None:
    form = answer_form(ENG, PMM)
    assert read_answers(form, QUESTIONS) == {}
    assert unanswered(form, QUESTIONS) == QUESTIONS
    assert missing_form(form, QUESTIONS) == ""


def test_an_answer_is_the_text_under_its_question_until_the_next_heading() -> None:
    form = answer(answer_form(ENG, PMM), "Who is it for?", "Platform teams.\n\nAnd admins.")
    form = answer(form, "What are the key selling points?", "- Fast\n- Safe")
    assert read_answers(form, QUESTIONS) == {
        "Who is it for?": "Platform teams.\n\nAnd admins.",
        "What are the key selling points?": "- Fast\n- Safe",
    }
    assert unanswered(form, QUESTIONS) == [
        "What pain does it solve?",
        "What are its current limitations?",
    ]


def test_questions_are_found_however_people_write_them() -> None:
    text = (
        "## who IS it for\nDevs\n\n"
        "**What pain does it solve?**\nWaiting.\n"
        "```\n# not a heading\n```\n"
        "### Some other heading\nnot an answer\n"
        "What are its current limitations?\nno heading: not found\n"
    )
    assert read_answers(text, QUESTIONS) == {
        "Who is it for?": "Devs",
        "What pain does it solve?": "Waiting.\n```\n# not a heading\n```",
    }


def test_placeholders_comments_and_blanks_are_not_answers() -> None:
    text = "#### Who is it for?\n\n_(Answer here)_ <!-- tell us -->\n\n\n#### Next\n"
    assert read_answers(text, QUESTIONS) == {}


def test_only_people_part_is_read_and_answers_are_bounded() -> None:
    managed = "#### Who is it for?\n\nManaged text is not an answer."
    tail = answer(answer_form(ENG, PMM), "Who is it for?", "x " * 5000 + "\x00")
    description = compose_description(managed, "demo/sister/f", tail)
    found = read_answers(description, QUESTIONS)["Who is it for?"]
    assert len(found) <= ANSWER_MAX and found.endswith("…") and "\x00" not in found


def test_missing_form_adds_only_the_questions_without_a_heading() -> None:
    assert missing_form("My notes", QUESTIONS).count(PLACEHOLDER) == len(QUESTIONS)
    partial = answer_form(ENG, [])
    extra = missing_form(partial, QUESTIONS)
    assert extra.count("####") == 1 and "key selling points" in extra
    assert "## Answers" not in extra  # the form's heading is there already


SISTER = IssueSpec(
    key="demo/sister/feature",
    role=IssueRole.sister,
    title="Marketing: Feature (Demo)",
    description="Answer the questions below.",
    labels=("launch::demo",),
    due_date=date(2027, 1, 1),
    assignee="ada",
    questions=tuple(QUESTIONS),
    answer_form=answer_form(ENG, PMM),
)


def sister_state(description: str) -> IssueState:
    return IssueState(
        iid=9,
        web_url="http://x/-/issues/9",
        title=SISTER.title,
        description=description,
        labels=SISTER.labels,
        due_date=SISTER.due_date,
        assignee_ids=(3,),
        state="opened",
        key=SISTER.key,
    )


def test_a_rerun_after_an_answer_writes_nothing_and_keeps_it() -> None:
    typed = answer(SISTER.answer_form, "Who is it for?", "Platform teams")
    existing = sister_state(compose_description(SISTER.description, SISTER.key, typed))
    write = diff_issue(SISTER, existing, managed=SISTER.description, assignee_id=3)
    assert write.is_empty()
    # A new managed text rewrites the part above the marker only: the answer stays as typed.
    write = diff_issue(SISTER, existing, managed="New text.", assignee_id=3)
    assert write.description is not None
    assert split_description(write.description)[2] == typed


def test_an_issue_made_before_the_form_gets_it_below_peoples_notes() -> None:
    existing = sister_state(compose_description(SISTER.description, SISTER.key, "\nMy notes"))
    write = diff_issue(SISTER, existing, managed=SISTER.description, assignee_id=3)
    assert write.description is not None
    tail = split_description(write.description)[2]
    assert tail.startswith("\nMy notes\n") and tail.count(PLACEHOLDER) == len(QUESTIONS)
    again = sister_state(write.description)
    assert diff_issue(SISTER, again, managed=SISTER.description, assignee_id=3).is_empty()


def test_answers_fill_only_what_the_launch_file_leaves_empty(
    playbook: Playbook, l1: LaunchRequest
) -> None:
    plan = plan_launch(l1, playbook, TODAY)
    kit = plan.notification.kit  # type: ignore[union-attr]
    assert kit["audience"] == "Who is it for?"
    sisters = [s for s in plan.issues if s.role is IssueRole.sister]
    typed = {
        "Who is it for?": "Ignored: the file says who",
        "What are its current limitations?": "* GitLab.com only\n* English <b>only</b>\n",
        "What is the measurable benefit for a user, team or admin?": "Reviews in 5 minutes",
    }
    issues = []
    for spec in sisters:
        tail = spec.answer_form
        for question, text in typed.items():
            tail = answer(tail, question, text)
        issues.append(sister_state(compose_description(spec.description, spec.key, tail)))
        issues[-1] = IssueState(**{**issues[-1].__dict__, "key": spec.key})
    answers = sister_answers(plan, issues)
    assert set(answers) == {"code-review-agent", "review-policies"}
    filled = fill_kit(l1, answers, kit)
    agent, policies = filled.features
    assert agent.audience == l1.features[0].audience  # the file wins
    assert agent.limitations == l1.features[0].limitations
    assert policies.limitations == ["GitLab.com only", "English <b>only</b>"]  # was empty
    assert agent.benefit == policies.benefit == "Reviews in 5 minutes"
    shown = as_markdown(sales_message(filled, tracking_url=None, features_url=None))
    assert "Reviews in 5 minutes" in shown and "GitLab.com only" in shown
    assert "<b>" not in shown  # people's HTML reaches neither Slack nor the preview as HTML
    assert fill_kit(l1, {}, kit) is l1


def test_a_sister_issue_without_the_form_has_nothing_to_answer_yet() -> None:
    """An issue made before the answer form: its questions are not counted (nowhere to type
    them) until a launch run appends the form."""
    from tminus.domain.answers import unanswered

    assert unanswered("An old sister issue, no form.", ["Who is it for?"]) == []
