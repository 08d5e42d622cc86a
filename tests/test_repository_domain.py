"""Launches as code, the pure parts: which launch files a change affects, the hook parameters'
bounds, and the preview comment's text."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from tminus.domain.preview import PREVIEW_MARKER, LaunchPreview, Preview, preview_markdown
from tminus.domain.repository import (
    FileChange,
    MergeRequestChange,
    Push,
    affected_launches,
    is_launch_path,
)
from tminus.domain.request import LaunchRequest
from tminus.domain.results import ActionResult, Outcome

SHA_A = "a" * 40
SHA_B = "b" * 40
PROJECT = {"id": 7, "path_with_namespace": "marketing/launch-plans", "default_branch": "main"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("launches/dark-mode.yaml", True),
        ("launches/dark-mode.yml", True),
        ("launches/nested/dark-mode.yaml", False),
        ("launches/README.md", False),
        ("launches/.hidden.yaml", False),
        ("dark-mode.yaml", False),
        ("playbook.yaml", False),
    ],
)
def test_only_yaml_files_directly_in_launches_are_launch_files(path: str, expected: bool) -> None:
    assert is_launch_path(path) is expected


def test_changed_and_new_files_run_deleted_ones_cancel() -> None:
    changes = [
        FileChange("launches/a.yaml", "launches/a.yaml"),
        FileChange("launches/b.yaml", "launches/b.yaml", new_file=True),
        FileChange("launches/c.yaml", "launches/c.yaml", deleted_file=True),
        FileChange("README.md", "README.md"),
    ]
    got = affected_launches(changes, ["launches/a.yaml", "launches/b.yaml", "launches/z.yaml"])
    assert got.run == ("launches/a.yaml", "launches/b.yaml")
    assert got.cancel == ("launches/c.yaml",)
    assert not got.playbook_changed


def test_a_playbook_change_runs_every_launch_file() -> None:
    changes = [FileChange("playbook.yaml", "playbook.yaml")]
    got = affected_launches(changes, ["launches/a.yaml", "launches/z.yml", "launches/x.md"])
    assert got.run == ("launches/a.yaml", "launches/z.yml")
    assert got.playbook_changed and not got.cancel


def test_a_rename_within_launches_runs_the_new_path_and_cancels_nothing() -> None:
    inside = FileChange("launches/old.yaml", "launches/new.yaml", renamed_file=True)
    assert affected_launches([inside], []) == affected_launches(
        [FileChange("launches/new.yaml", "launches/new.yaml")], []
    )
    out = FileChange("launches/old.yaml", "archive/old.yaml", renamed_file=True)
    got = affected_launches([out], [])
    assert (got.run, got.cancel) == ((), ("launches/old.yaml",))


def test_nothing_relevant_is_empty() -> None:
    assert affected_launches([FileChange("docs/x.md", "docs/x.md")], ["launches/a.yaml"]).empty


def test_push_parameters_are_bounded_and_name_the_field() -> None:
    push = Push(ref="refs/heads/main", before=SHA_A, after=SHA_B, project=PROJECT)
    assert push.branch == "main"
    with pytest.raises(ValidationError) as err:
        Push(ref="refs/tags/v1", before=SHA_A, after="not-a-sha", project=PROJECT)
    fields = {e["loc"][0] for e in err.value.errors()}
    assert fields == {"ref", "after"}


def test_merge_request_parameters_refuse_bad_branches() -> None:
    good = {
        "action": "update",
        "iid": 3,
        "source_branch": "move-dark-mode",
        "target_branch": "main",
        "head_sha": SHA_B,
        "project": PROJECT,
    }
    assert MergeRequestChange.model_validate(good).iid == 3
    with pytest.raises(ValidationError) as err:
        MergeRequestChange.model_validate({**good, "source_branch": "a..b", "action": "merge"})
    assert {e["loc"][0] for e in err.value.errors()} == {"source_branch", "action"}


def _request(slug: str = "dark-mode") -> LaunchRequest:
    return LaunchRequest.model_validate(
        {
            "slug": slug,
            "title": "Dark mode | beta <b>",
            "tier": "L2",
            "launch_date": date(2027, 1, 26),
            "owner": "priya",
            "project": "marketing/launches",
            "features": [
                {
                    "name": "Dark mode",
                    "summary": "A dark theme.",
                    "docs_urls": ["https://docs.example.com/dark-mode"],
                    "features_page_title": "Dark mode",
                }
            ],
        }
    )


def test_the_preview_lists_moved_dates_and_the_sales_correction_and_escapes_text() -> None:
    rows = (
        ActionResult(
            "k1",
            "activity",
            "Blog | post",
            Outcome.updated,
            detail="changed: due_date 2027-01-12 -> 2027-01-19",
        ),
        ActionResult(
            "k2",
            "calendar",
            "Launch day",
            Outcome.updated,
            detail="changed: date 2027-01-19 -> 2027-01-26",
        ),
        ActionResult(
            "k3", "sales", "Sales notification", Outcome.updated, detail="would send the correction"
        ),
        ActionResult("k4", "activity", "Docs", Outcome.unchanged),
    )
    preview = Preview(
        "!4 at abcdef12", (LaunchPreview("launches/dark-mode.yaml", _request(), rows),)
    )
    text = preview_markdown(preview)
    assert text.startswith(PREVIEW_MARKER)
    assert "due\\_date 2027-01-12 -&gt; 2027-01-19" in text  # markdown-escaped
    assert "date 2027-01-19 -&gt; 2027-01-26" in text
    assert "would send the correction" in text
    assert "Blog \\| post" in text and "Dark mode \\| beta &lt;b&gt;" in text
    assert "!4 at abcdef12" in text  # GitLab links the merge request
    assert "1 other items already match" in text
    assert "2 date(s) moved" in text
    assert preview.status() == ("success", "1 launch(es) checked, 3 change(s) on merge")


def test_an_invalid_file_fails_the_status_and_names_the_field() -> None:
    bad = LaunchPreview(
        "launches/bad.yaml", problems=("launch_date: not a date; write 2027-01-19",)
    )
    preview = Preview("!5 at 0123abcd", (bad,))
    state, description = preview.status()
    assert state == "failed" and "launches/bad.yaml" in description
    text = preview_markdown(preview)
    assert "Not valid" in text and "launch\\_date: not a date" in text


def test_a_deleted_file_says_its_launch_is_cancelled() -> None:
    gone = LaunchPreview("launches/old.yaml", _request("old"), cancelled=True)
    text = preview_markdown(Preview("!6 at 0123abcd", (gone,)))
    assert "cancels launch `old`" in text and "nothing is deleted" in text


def test_text_from_a_launch_file_cannot_mention_link_or_break_the_comment() -> None:
    hostile = "@all ![t](http://t.example/p.png) [login](http://evil.example) `x` <img src=x>"
    row = ActionResult("k", "activity", hostile, Outcome.created, detail="| @group")
    text = preview_markdown(
        Preview("!7 at 0123abcd", (LaunchPreview("launches/`odd`.yaml", _request(), (row,)),))
    )
    body = text.split("\n", 1)[1]  # after the marker, which is ours
    assert "@all" not in body and "@group" not in body
    assert "](" not in body and "<img" not in body
    assert "`'odd'`.yaml" not in body and "`launches/'odd'.yaml`" in body


def test_a_moved_launch_file_is_not_cancelled_and_two_files_for_one_slug_are_refused() -> None:
    from tminus.domain.preview import same_slugs

    kept = LaunchPreview("launches/new.yaml", _request("x"))
    gone = LaunchPreview("launches/old.yaml", _request("x"), cancelled=True)
    assert same_slugs([kept, gone]) == [kept]
    twin = LaunchPreview("launches/twin.yaml", _request("x"))
    refused = same_slugs([kept, twin])
    assert all(
        "slug 'x' is used by launches/new.yaml, launches/twin.yaml" in lp.problems[0]
        for lp in refused
    )
