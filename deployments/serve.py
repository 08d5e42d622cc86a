"""All tminus deployments, as code, served together by ``tminus serve``.

- ``launch/launch``: started by hand from the Prefect UI; its form is built from
  ``LaunchRequest`` (tiers as a dropdown, every field described, defaults shown).
- ``on-release/on-release``: started by a deployment trigger on the ``gitlab.release.*`` events
  the webhook receiver emits; the event payload becomes the ``release`` parameter. The
  receiver builds that payload as a validated ``tminus.domain.release.Release`` (bounded fields, the
  description as an excerpt), so it is always a parameter Prefect accepts.
- ``audit/audit``: the checklist audit on a cron schedule (default weekdays 09:00) in the
  configured time zone.

Runs start within a few seconds of their trigger: the runner polls every second
(``PREFECT_RUNNER_POLL_FREQUENCY``, default 10 s). Stopping ``serve`` pauses the audit
schedule, but the release trigger stays: a release that arrives while nothing serves creates
a run that starts when ``tminus serve`` is back.
"""

from __future__ import annotations

from typing import Any

from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from tminus.settings import Settings

RELEASE_EVENT = "gitlab.release.*"
POLL_SECONDS = 1


def release_trigger() -> DeploymentEventTrigger:
    return DeploymentEventTrigger(
        name="gitlab-release",
        description="A GitLab release (via the tminus webhook receiver) starts on-release.",
        expect={RELEASE_EVENT},
        match={"prefect.resource.id": "gitlab.release.*"},
        # One expression keeps its JSON type: the flow receives the payload as a dict. The
        # payload is exactly a Release (deployments.webhook.release_event), small and bounded.
        parameters={"release": "{{ event.payload }}"},
    )


def build_deployments(settings: Settings) -> list[Any]:
    from tminus.flows.audit import audit
    from tminus.flows.launch import launch
    from tminus.flows.on_release import on_release

    return [
        launch.to_deployment(
            name="launch",
            description="Start a launch: fill the form (tier, date, owner, features) and run.",
            tags=["tminus"],
        ),
        on_release.to_deployment(
            name="on-release",
            description="Started by GitLab releases through the webhook receiver.",
            tags=["tminus"],
            triggers=[release_trigger()],
        ),
        audit.to_deployment(
            name="audit",
            description="Checklist audit of every open launch.",
            tags=["tminus"],
            schedules=[Cron(settings.audit_cron, timezone=settings.timezone)],
        ),
    ]


def serve_all(settings: Settings, limit: int | None = 8) -> None:
    """Serve every deployment until interrupted (blocks)."""
    from prefect import serve
    from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_RUNNER_POLL_FREQUENCY: POLL_SECONDS}):
        serve(*build_deployments(settings), limit=limit)
