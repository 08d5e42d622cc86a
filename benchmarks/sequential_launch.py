"""A launch as a plain script would do it: the same API calls as tminus, one after another.

This is the baseline of ``benchmarks/launch_vs_script.py``: what a user writes without an
orchestrator, with the same clients tminus uses (python-gitlab for GitLab, the Google API
client for Calendar, httpx for Slack and the pages). It makes the same reads and writes as a
first tminus run of the launch (check the project and the people, look for the launch's
issues by label and by key, list the labels, create the missing labels, the activity and
sister issues, the tracking issue with its checklist, the links; list, then insert the
calendar entries; read every page; the sales note, the Slack message, the note's record), in
order, waiting for each answer before the next call. The *content* (titles, descriptions,
labels, due dates, calendar entries, the message) comes from tminus's pure planner, so both
write the same things; only the way the calls are made differs.

It has none of tminus's safety: no retries, no lock, no re-run detection beyond the reads it
makes, no results report. It is a speed baseline, not an alternative.

    PYTHONPATH=.:sandbox .venv/bin/python benchmarks/sequential_launch.py --url http://127.0.0.1:4281

runs it once against running stand-ins (``tminus sandbox``) with examples/l1.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_script(
    plan: Any,
    *,
    gitlab_url: str,
    gitlab_token: str,
    calendar_endpoint: str,
    calendar_id: str,
    slack_url: str,
    features_url: str | None,
    compare_url: str | None,
) -> dict[str, int]:
    """Do the launch ``plan`` describes, one call at a time; return counts of what it wrote."""
    import gitlab
    import httpx
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient.discovery import build

    from tminus.domain.calendar import end_day, event_id
    from tminus.domain.issues import compose_description, fill_refs
    from tminus.domain.pages import page_targets
    from tminus.integrations.slack_blocks import sales_message

    request = plan.request
    written = {"labels": 0, "issues": 0, "links": 0, "events": 0, "notes": 0, "messages": 0}

    # GitLab: the project, the people, what the launch already has.
    gl = gitlab.Gitlab(gitlab_url, private_token=gitlab_token, per_page=100)
    project = gl.projects.get(request.project)
    user_ids: dict[str, int] = {}
    for username in (request.owner, *request.team.values()):
        users = gl.users.list(username=username, get_all=True)
        if not users:
            raise SystemExit(f"no GitLab user {username}")
        user_ids[username] = users[0].id
    existing = {
        issue.iid
        for query in ({"labels": [request.launch_label]}, {"search": plan.launch_marker})
        for issue in project.issues.list(state="all", iterator=True, **query)
    }
    if existing:
        raise SystemExit("this script only does a first run: the launch has issues already")

    # Labels, then the issues, then the tracking issue that lists them, then the links.
    have = {label.name for label in project.labels.list(get_all=True)}
    for name in plan.labels():
        if name not in have:
            project.labels.create({"name": name, "color": "#428bca"})
            written["labels"] += 1
    refs: dict[str, int] = {}
    for spec in (*plan.issues, plan.tracking):
        data: dict[str, Any] = {
            "title": spec.title,
            "description": compose_description(fill_refs(spec.description, refs), spec.key),
            "labels": list(spec.labels),
        }
        if spec.due_date:
            data["due_date"] = spec.due_date.isoformat()
        if spec.assignee in user_ids:
            data["assignee_ids"] = [user_ids[spec.assignee]]
        issue = project.issues.create(data)
        written["issues"] += 1
        if spec is not plan.tracking:
            refs[spec.key] = issue.iid
    tracking = issue
    linked = {link.iid for link in tracking.links.list(get_all=True)}
    for iid in refs.values():
        if iid not in linked:
            tracking.links.create({"target_project_id": project.id, "target_issue_iid": iid})
            written["links"] += 1

    # The launch calendar.
    events = build(
        "calendar",
        "v3",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": calendar_endpoint},
    ).events()
    prop = f"tminus_launch={request.slug}"
    have_events = {
        e["id"]
        for e in events.list(calendarId=calendar_id, privateExtendedProperty=prop)
        .execute()
        .get("items", [])
    }
    for entry in plan.calendar:
        if event_id(entry.key) in have_events:
            continue
        body = {
            "id": event_id(entry.key),
            "summary": entry.title,
            "description": entry.description,
            "start": {"date": entry.day.isoformat()},
            "end": {"date": end_day(entry.day).isoformat()},
            "extendedProperties": {
                "private": {
                    "tminus_launch": request.slug,
                    "tminus_key": entry.key,
                    "tminus_activity": entry.activity_key,
                }
            },
        }
        events.insert(calendarId=calendar_id, body=body).execute()
        written["events"] += 1

    with httpx.Client(timeout=15) as http:
        # Every page the checks ask for.
        for target in page_targets(plan, features_url, compare_url):
            http.get(target.url, follow_redirects=True)
        # Sales: the note first (so a re-run knows), the message, then the note's record.
        if plan.notification is not None:
            notes = tracking.notes.list(get_all=True, sort="asc")
            if not any("tminus:sales" in (n.body or "") for n in notes):
                note = tracking.notes.create({"body": "<!-- tminus:sales -->\nsending ..."})
                payload = sales_message(
                    request, tracking_url=tracking.web_url, features_url=features_url
                )
                http.post(slack_url, json=payload).raise_for_status()
                note.body = "<!-- tminus:sales -->\nsent"
                note.save()
                written["notes"] += 1
                written["messages"] += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4281", help="the running stand-ins")
    parser.add_argument("--file", default=str(ROOT / "examples" / "l1.yaml"))
    args = parser.parse_args()

    from datetime import date

    from tminus.domain.planner import plan_launch
    from tminus.integrations.files import load_launch_file, load_playbook

    plan = plan_launch(load_launch_file(Path(args.file)), load_playbook(), date.today())
    print(
        run_script(
            plan,
            gitlab_url=args.url,
            gitlab_token="script",
            calendar_endpoint=f"{args.url}/calendar/v3/",
            calendar_id="marketing-launches",
            slack_url=f"{args.url}/slack/webhook/sales",
            features_url=f"{args.url}/features",
            compare_url=f"{args.url}/features/compare",
        )
    )


if __name__ == "__main__":
    main()
