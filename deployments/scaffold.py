"""``tminus init``: scaffold a launches repository (launch files as code, reviewed in GitLab).

Writes a README (the convention and the GitLab settings to make), an example launch file and
a copy of the playbook in use, into a folder that becomes the repository. Existing files are
never overwritten: the command refuses, naming them, before it writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from tminus.domain.repository import LAUNCHES_FOLDER, PLAYBOOK_FILE
from tminus.errors import SettingsError
from tminus.integrations.files import default_playbook_path, read_bounded

README = """\
# Launch plans

Every product launch is a YAML file in `launches/`, reviewed in merge requests like code.
tminus turns each file into the launch's work: the tracking issue,
one issue per activity, the sister marketing issues, the launch calendar, the page checks and
the message to sales.

- **A merge request** that touches `launches/` or `playbook.yaml` gets one comment saying what
  merging would change, per launch: issues created, updated (moved due dates), closed or
  reopened, calendar entries that move, whether sales would get a correction, and any invalid
  field with its file. Each push updates that comment. An invalid file sets the commit status
  `tminus/preview` to failed.
- **Merging** runs exactly the launch files that changed, one launch run each. Deleting a
  file cancels its launch (a label and a comment on the tracking issue; nothing is deleted).
- **`playbook.yaml`** (optional) is the team's playbook: tiers, activities, lead times,
  owners. Changing it previews, then runs, every launch file. Without it tminus uses its own.

Try a file locally before you push: `tminus plan launches/example.yaml` (checks it and
prints the plan), `tminus preview launches/example.yaml` (what a run would change).

## Set up (once, by a maintainer)

1. Where tminus runs, set `TMINUS_LAUNCHES_REPO={project}` and `TMINUS_WEBHOOK_TOKEN` to a
   long random secret, then start it (`tminus serve`, or workers and `tminus webhook`).
2. In this project: **Settings > Webhooks > Add new webhook**
   - URL: `https://<your tminus receiver>/hooks/gitlab`
   - Secret token: the value of `TMINUS_WEBHOOK_TOKEN`
   - Trigger: **Push events** (branch filter: `{branch}`), **Merge request events**
     (and **Releases events** if releases start launches).
3. **Settings > Merge requests**: turn on "Pipelines must succeed", so a merge request whose
   `tminus/preview` status failed cannot be merged by accident. Protect `{branch}`.
"""


def example_launch(today: date) -> str:
    """An L3 launch a month out, valid against the default playbook."""
    day = today + timedelta(days=35)
    while day.weekday() != 1:  # launches land on a Tuesday
        day += timedelta(days=1)
    return f"""\
# One launch per file; `tminus plan launches/<file>` checks it. Fields: see tminus's README.
slug: example-launch
title: Example launch
tier: L3
launch_date: {day.isoformat()}
owner: your.gitlab.username
project: marketing/launches
features:
  - name: Example feature
    summary: One line on what it does and for whom.
    docs_urls:
      - https://docs.example.com/example-feature
    features_page_title: Example feature
"""


@dataclass(frozen=True)
class Scaffold:
    files: dict[Path, bytes]


def scaffold(
    folder: Path, project: str, branch: str, playbook: Path | None, today: date
) -> Scaffold:
    """The files ``tminus init`` writes (nothing is written here)."""
    source = playbook or default_playbook_path()
    return Scaffold(
        {
            folder / "README.md": README.format(project=project, branch=branch).encode(),
            folder / LAUNCHES_FOLDER / "example.yaml": example_launch(today).encode(),
            folder / PLAYBOOK_FILE: read_bounded(source, SettingsError),
        }
    )


def write_scaffold(plan: Scaffold) -> list[Path]:
    """Write every file, or none when any exists already."""
    existing = [str(path) for path in plan.files if path.exists()]
    if existing:
        raise SettingsError(
            "tminus init",
            [f"{', '.join(existing)} already exist(s); choose an empty folder (nothing written)"],
        )
    for path, content in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return list(plan.files)
