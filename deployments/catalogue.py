"""The three tminus deployments, defined once.

``tminus serve`` builds its deployments from this catalogue (``tminus.deployments.serve``), and
``prefect.yaml``, for teams that run work pools and workers, is generated from it:
``tminus deployments --write prefect.yaml`` (``--check`` fails when the file is out of date; a
test runs the check). Edit the deployments here, never in ``prefect.yaml``.

- ``launch``: started by hand from the Prefect UI; its form is built from ``LaunchRequest``.
- ``on-release``: started by a trigger on the ``gitlab.release.*`` events the webhook receiver
  emits; the event payload becomes the ``release`` parameter.
- ``audit``: the checklist audit on a cron schedule in a time zone. ``tminus serve`` takes both
  from ``TMINUS_AUDIT_CRON`` and ``TMINUS_TIMEZONE``; ``prefect.yaml`` holds their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from tminus.settings import Settings

RELEASE_EVENT = "gitlab.release.*"
TAGS = ("tminus",)
WORK_POOL = "tminus"
# The Prefect release pinned in pyproject.toml, written into prefect.yaml.
PREFECT_VERSION = "3.8.8"


@dataclass(frozen=True)
class EventTrigger:
    """A deployment trigger: an event matching ``expect`` and ``match`` starts a run."""

    name: str
    description: str
    expect: tuple[str, ...]
    match: dict[str, str]
    # Prefect renders these as Jinja templates from the event.
    parameters: dict[str, str]


@dataclass(frozen=True)
class CronSchedule:
    cron: str
    timezone: str


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: what ``flow.to_deployment`` and a ``prefect.yaml`` entry both need."""

    name: str
    # A file path from the project root, as prefect.yaml's workers (in a checkout) read it.
    entrypoint: str
    description: str
    tags: tuple[str, ...] = TAGS
    triggers: tuple[EventTrigger, ...] = ()
    schedules: tuple[CronSchedule, ...] = ()
    # Environment of the flow run's process: prefect.yaml's job variables for process
    # workers; `tminus serve` starts its runs with it (serve.serve_all).
    env: tuple[tuple[str, str], ...] = ()

    @property
    def flow_module(self) -> str:
        """The module that defines the flow: ``flows/launch.py`` is ``tminus.flows.launch``."""
        path = self.entrypoint.split(":", 1)[0]
        return "tminus." + path.removesuffix(".py").replace("/", ".")

    @property
    def flow_name(self) -> str:
        """The flow function's name in that module."""
        return self.entrypoint.split(":", 1)[1]


RELEASE_TRIGGER = EventTrigger(
    name="gitlab-release",
    description="A GitLab release (via the tminus webhook receiver) starts on-release.",
    expect=(RELEASE_EVENT,),
    match={"prefect.resource.id": RELEASE_EVENT},
    # One expression keeps its JSON type: the flow receives the payload as a dict. The
    # payload is exactly a Release (deployments.webhook.release_event), small and bounded.
    parameters={"release": "{{ event.payload }}"},
)


MERGE_REQUEST_EVENT = "gitlab.merge_request.*"
PUSH_EVENT = "gitlab.push"

MERGE_REQUEST_TRIGGER = EventTrigger(
    name="gitlab-merge-request",
    description="A merge request in the launches repository (opened, reopened or pushed to) "
    "starts preview.",
    expect=(MERGE_REQUEST_EVENT,),
    match={"prefect.resource.id": "gitlab.merge_request.*"},
    parameters={"merge_request": "{{ event.payload }}"},
)

PUSH_TRIGGER = EventTrigger(
    name="gitlab-push",
    description="A push to the launches repository's default branch starts apply-launches.",
    expect=(PUSH_EVENT,),
    match={"prefect.resource.id": "gitlab.push.*"},
    parameters={"push": "{{ event.payload }}"},
)


# The audit runs thread pools batch after batch: with glibc's default malloc arenas (8 per
# core) its peak memory grew with the launches audited; capped at 2 it stays about flat
# (benchmarks/audit_scale.py). glibc reads this when the process starts.
AUDIT_ENV = (("MALLOC_ARENA_MAX", "2"),)


def catalogue(audit_cron: str, timezone: str) -> list[DeploymentSpec]:
    """Every tminus deployment; the audit runs on ``audit_cron`` in ``timezone``."""
    return [
        DeploymentSpec(
            name="launch",
            entrypoint="flows/launch.py:launch",
            description="Start a launch: fill the form (tier, date, owner, features) and run.",
        ),
        DeploymentSpec(
            name="on-release",
            entrypoint="flows/on_release.py:on_release",
            description="Started by GitLab releases through the webhook receiver.",
            triggers=(RELEASE_TRIGGER,),
        ),
        DeploymentSpec(
            name="recommend-tier",
            entrypoint="flows/tier.py:recommend_tier",
            description="Answer the tier questionnaire: the recommended tier, with reasons.",
        ),
        DeploymentSpec(
            name="preview",
            entrypoint="flows/preview.py:preview",
            description="Started by merge requests in the launches repository: one comment "
            "saying what merging would change, and a commit status.",
            triggers=(MERGE_REQUEST_TRIGGER,),
        ),
        DeploymentSpec(
            name="apply-launches",
            entrypoint="flows/apply_launches.py:apply_launches",
            description="Started by merges to the launches repository: runs the changed "
            "launch files, cancels the deleted ones.",
            triggers=(PUSH_TRIGGER,),
        ),
        DeploymentSpec(
            name="audit",
            entrypoint="flows/audit.py:audit",
            description="Checklist audit of every open launch.",
            schedules=(CronSchedule(audit_cron, timezone),),
            env=AUDIT_ENV,
        ),
    ]


def default_catalogue() -> list[DeploymentSpec]:
    """The catalogue with the settings' defaults (what ``prefect.yaml`` holds)."""
    fields = Settings.model_fields
    return catalogue(fields["audit_cron"].default, fields["timezone"].default)


# --- prefect.yaml ------------------------------------------------------------------------

PREFECT_YAML_HEADER = """\
# Generated from deployments/catalogue.py by `tminus deployments --write prefect.yaml`: edit the
# deployments there, then run that command (a test fails while this file is out of date).
#
# For teams that run work pools and workers instead of `tminus serve`:
#   prefect work-pool create tminus --type process
#   TMINUS_CHECKOUT=$PWD prefect deploy --all  # from this folder; each worker's checkout must
#                                              # be at that same path
#   PREFECT_WORKER_QUERY_SECONDS=1 prefect worker start --pool tminus   # on each worker, in a
#                                              # checkout of this project with tminus installed
# Workers need the same TMINUS_* settings as `tminus serve` (see README); with several workers
# set TMINUS_GITLAB_GLOBAL_LIMIT on each, so GitLab's rate limit is shared, not per worker.
# The audit's cron and time zone are set below (TMINUS_AUDIT_CRON applies to `tminus serve`
# only). The GitLab webhook receiver still runs on its own: `tminus webhook`. README's
# "Production layout" has the rest; tests/test_e2e_postgres.py runs this file on two workers.
# A trigger parameter that is exactly one expression ("{{ event.payload }}") keeps its JSON
# type: on-release gets the release payload as a dict.
"""


def _trigger_entry(trigger: EventTrigger) -> dict[str, Any]:
    return {
        "type": "event",
        "name": trigger.name,
        "description": trigger.description,
        "enabled": True,
        "expect": list(trigger.expect),
        "match": dict(trigger.match),
        "parameters": dict(trigger.parameters),
    }


def _deployment_entry(spec: DeploymentSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "entrypoint": spec.entrypoint,
        "tags": list(spec.tags),
        "work_pool": {"name": WORK_POOL},
    }
    if spec.env:
        entry["work_pool"]["job_variables"] = {"env": dict(spec.env)}
    if spec.triggers:
        entry["triggers"] = [_trigger_entry(t) for t in spec.triggers]
    if spec.schedules:
        entry["schedules"] = [{"cron": s.cron, "timezone": s.timezone} for s in spec.schedules]
    return entry


def prefect_yaml(specs: list[DeploymentSpec] | None = None) -> str:
    """The text of ``prefect.yaml`` for ``specs`` (the default catalogue when None)."""
    data = {
        "name": "tminus",
        "prefect-version": PREFECT_VERSION,
        "pull": [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": "{{ $TMINUS_CHECKOUT }}"
                }
            }
        ],
        "deployments": [
            _deployment_entry(spec)
            for spec in (specs if specs is not None else default_catalogue())
        ],
    }
    return PREFECT_YAML_HEADER + yaml.safe_dump(data, sort_keys=False, width=100)
