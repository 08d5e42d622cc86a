"""All tminus deployments, served together by ``tminus serve``.

The deployments themselves (names, flows, descriptions, tags, the release trigger, the audit
schedule) are defined once in ``tminus.deployments.catalogue``; this module turns each entry
into ``flow.to_deployment(...)``, with the audit's cron and time zone from the settings.

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

import os
from importlib import import_module
from typing import Any

from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from tminus.deployments.catalogue import RELEASE_TRIGGER, DeploymentSpec, EventTrigger, catalogue
from tminus.settings import Settings

POLL_SECONDS = 1


def event_trigger(trigger: EventTrigger) -> DeploymentEventTrigger:
    return DeploymentEventTrigger(
        name=trigger.name,
        description=trigger.description,
        expect=set(trigger.expect),
        match=dict(trigger.match),
        parameters=dict(trigger.parameters),
    )


def release_trigger() -> DeploymentEventTrigger:
    """The on-release deployment's trigger, as Prefect gets it."""
    return event_trigger(RELEASE_TRIGGER)


def to_deployment(spec: DeploymentSpec) -> Any:
    """The catalogue entry as a deployment ``serve()`` takes (a ``RunnerDeployment``)."""
    flow = getattr(import_module(spec.flow_module), spec.flow_name)
    return flow.to_deployment(
        name=spec.name,
        description=spec.description,
        tags=list(spec.tags),
        triggers=[event_trigger(t) for t in spec.triggers] or None,
        schedules=[Cron(s.cron, timezone=s.timezone) for s in spec.schedules] or None,
    )


def build_deployments(settings: Settings) -> list[Any]:
    return [to_deployment(spec) for spec in catalogue(settings.audit_cron, settings.timezone)]


def serve_all(settings: Settings, limit: int | None = 8) -> None:
    """Serve every deployment until interrupted (blocks)."""
    from prefect import serve
    from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY, temporary_settings

    # The runner starts each flow run's process with this process's environment (it does not
    # apply job variables): the deployments' environments are set here, unless already set.
    for spec in catalogue(settings.audit_cron, settings.timezone):
        for name, value in spec.env:
            os.environ.setdefault(name, value)
    with temporary_settings({PREFECT_RUNNER_POLL_FREQUENCY: POLL_SECONDS}):
        serve(*build_deployments(settings), limit=limit)
