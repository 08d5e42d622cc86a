"""Settings: environment variables prefixed ``TMINUS_``, built by ``load_settings()``.

Nothing here is read at import time. With no GitLab URL set, tminus runs on the *embedded
default*: a local Prefect server and local stand-ins for GitLab (and later Calendar and Slack),
with their state under ``TMINUS_HOME`` and no credentials.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tminus.domain.validation import describe_validation_error
from tminus.errors import SettingsError

ENV_PREFIX = "TMINUS_"


# An email address: a local part without spaces or quotes, then a domain name.
EMAIL_PATTERN = r"^[^@\s<>,;\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"


class Settings(BaseSettings):
    """Every setting, with its environment variable ``TMINUS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    home: Path = Field(
        default=Path(".tminus"),
        description="State folder of the embedded default: Prefect database, stand-in data, logs.",
    )
    playbook: Path | None = Field(
        default=None, description="Your playbook YAML; the packaged default when unset."
    )
    gitlab_url: AnyHttpUrl | None = Field(
        default=None,
        description="GitLab base URL (https://gitlab.example.com). Unset: the local stand-in.",
    )
    gitlab_token: SecretStr | None = Field(
        default=None, description="GitLab access token with the `api` scope."
    )
    gitlab_timeout: float = Field(default=15.0, gt=0, le=300, description="Seconds per request.")
    gitlab_concurrency: int = Field(
        default=8,
        ge=1,
        le=32,
        description="GitLab requests in flight at once, per launch run. GitLab's rate limits "
        "count requests per minute; a launch makes about 80 (L1, 5 features) to 130 (20).",
    )
    gitlab_global_limit: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="GitLab requests in flight at once across every worker and process "
        "(a Prefect global concurrency limit, tminus-gitlab-api). Unset: per run only.",
    )
    retry_attempts: int = Field(
        default=8,
        ge=1,
        le=20,
        description="Attempts per call to GitLab, Calendar or Slack (429, 5xx, timeouts).",
    )
    retry_backoff: float = Field(
        default=0.5, ge=0, le=30, description="First wait between attempts, doubling after."
    )
    retry_deadline: float = Field(
        default=40.0,
        gt=0,
        le=600,
        description="Seconds after which no new attempt of a call starts: an unreachable "
        "service fails in about this plus one timeout.",
    )
    calendar_id: str = Field(
        default="marketing-launches",
        description="Google Calendar id of the marketing launch calendar.",
    )
    gcal_endpoint: str | None = Field(
        default=None,
        description="Calendar API endpoint ending in /calendar/v3/. Unset: Google itself, or "
        "the local stand-in on the embedded default.",
    )
    gcal_credentials_file: Path | None = Field(
        default=None, description="Service-account JSON key file for the Calendar API."
    )
    gcal_secret_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the service-account JSON "
        "(instead of a file).",
    )
    slack_webhook_url: SecretStr | None = Field(
        default=None,
        description="Slack incoming webhook for the sales channel. Unset: the local stand-in "
        "on the embedded default; otherwise sales is not notified.",
    )
    sales_channel_email: str | None = Field(
        default=None,
        max_length=254,
        pattern=EMAIL_PATTERN,
        description="The sales channel's email address (a Slack channel's, or a group's): an "
        "attendee of the sales training event. Unset: the event has no attendee.",
    )
    gcal_subject: str | None = Field(
        default=None,
        max_length=254,
        pattern=EMAIL_PATTERN,
        description="The Google Workspace user the service account acts for (domain-wide "
        "delegation); Google lets a service account invite attendees only then.",
    )
    features_url: str | None = Field(
        default=None, description="The /features page that must list priority features."
    )
    features_compare_url: str | None = Field(
        default=None, description="The /features compare view."
    )
    pages_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Hosts page checks may fetch (comma-separated; *.example.com allowed; "
        "host:8080 for another port than 80/443, host:* for any). Empty: the hosts and ports "
        "of features_url, features_compare_url and nothing else.",
    )
    pages_allow_private: bool | None = Field(
        default=None,
        description="Allow page checks to fetch private and loopback addresses. Unset: no, "
        "except the embedded stand-in's own address (127.0.0.1 on its port, nothing else).",
    )
    approval_timeout: int = Field(
        default=86_400,
        ge=10,
        le=30 * 86_400,
        description="Seconds an approval-gated launch waits for a PMM before giving up.",
    )
    launches_dir: Path | None = Field(
        default=None,
        description="Folder of launch files; a release whose tag matches one runs it.",
    )
    launches_repo: str | None = Field(
        default=None,
        max_length=1024,
        description="GitLab project holding launch files as code (launches/*.yaml, optionally "
        "playbook.yaml): its merge requests get a plan preview, merges to its default branch "
        "run the changed launches. Unset: merge request and push hooks are ignored.",
    )
    release_owner: str = Field(
        default="pmm",
        description="GitLab username owning launches started by a release with no launch file.",
    )
    launch_project: str | None = Field(
        default=None,
        description="GitLab project for launches started by releases (default: the release's).",
    )
    default_tier: str = Field(
        default="L3", pattern=r"^L[123]$", description="Tier of a release that names none."
    )
    project_tiers: Annotated[dict[str, str], NoDecode] = Field(
        default={},
        description="Default tier per project: 'group/a=L2,group/b=L1'.",
    )
    audit_projects: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="GitLab projects whose open launches the audit checks (comma-separated). "
        "Empty: TMINUS_LAUNCH_PROJECT, or marketing/launches. Launches that releases start in "
        "their own projects are audited only when those projects are listed here.",
    )
    audit_cron: str = Field(
        default="0 9 * * 1-5", description="When the checklist audit runs (cron, in timezone)."
    )
    webhook_token: SecretStr | None = Field(
        default=None, description="Secret GitLab sends in X-Gitlab-Token to the receiver."
    )
    webhook_port: int = Field(default=4282, ge=1024, le=65535, description="Webhook receiver.")
    webhook_host: str = Field(
        default="127.0.0.1",
        description="Address the receiver listens on; 0.0.0.0 lets GitLab on another host reach "
        "it (put TLS in front: the token travels in clear text).",
    )
    timezone: str = Field(
        default="UTC", description="Time zone that decides what 'today' is (IANA name)."
    )
    prefect_port: int = Field(
        default=4280, ge=1024, le=65535, description="Embedded Prefect server."
    )
    sandbox_port: int = Field(default=4281, ge=1024, le=65535, description="Embedded stand-ins.")

    @field_validator("pages_allowed_hosts", "audit_projects", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("project_tiers", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            out = {}
            for pair in pairs:
                project, sep, tier = pair.rpartition("=")
                if not sep or tier.strip() not in ("L1", "L2", "L3"):
                    raise ValueError(f"{pair!r} is not 'group/project=L1|L2|L3'")
                out[project.strip()] = tier.strip()
            return out
        return value

    def tier_for_project(self, project: str) -> str:
        return self.project_tiers.get(project, self.default_tier)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as Europe/Berlin") from None
        return value

    @property
    def embedded(self) -> bool:
        """True when tminus talks to its own local stand-ins instead of real systems."""
        return self.gitlab_url is None

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def gitlab_base_url(self) -> str:
        return str(self.gitlab_url).rstrip("/") if self.gitlab_url else self.sandbox_url

    @property
    def gcal_api_endpoint(self) -> str | None:
        """Where Calendar calls go; None means Google's own endpoint."""
        if self.gcal_endpoint:
            return self.gcal_endpoint
        return f"{self.sandbox_url}/calendar/v3/" if self.embedded else None

    @property
    def sales_webhook(self) -> str | None:
        if self.slack_webhook_url:
            return self.slack_webhook_url.get_secret_value()
        return f"{self.sandbox_url}/slack/webhook/sales" if self.embedded else None

    @property
    def features_page(self) -> str | None:
        if self.features_url:
            return self.features_url
        return f"{self.sandbox_url}/features" if self.embedded else None

    @property
    def features_compare_page(self) -> str | None:
        if self.features_compare_url:
            return self.features_compare_url
        return f"{self.sandbox_url}/features/compare" if self.embedded else None

    @property
    def page_hosts(self) -> list[str]:
        """Hosts page checks may fetch."""
        if self.pages_allowed_hosts:
            return self.pages_allowed_hosts
        pages = (self.features_page, self.features_compare_page)
        hosts = {urlsplit(u).netloc.rpartition("@")[2] for u in pages if u}
        return sorted(h for h in hosts if h)

    @property
    def page_private_ok(self) -> bool:
        """Private and loopback addresses allowed for every allowed host (an explicit yes)."""
        return bool(self.pages_allow_private)

    @property
    def page_private_origins(self) -> list[str]:
        """Origins whose private address is fine: the stand-in's, on the embedded default."""
        if self.embedded and self.pages_allow_private is None:
            return [urlsplit(self.sandbox_url).netloc]
        return []


_GIVEN: ContextVar[Settings | None] = ContextVar("tminus_settings", default=None)


@contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Run flows called inside this block with ``settings`` instead of the environment's.

    For callers that build settings themselves (tests, benchmarks, an embedding program):
    a flow calls ``load_settings()``, which returns these.
    """
    token = _GIVEN.set(settings)
    try:
        yield settings
    finally:
        _GIVEN.reset(token)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the settings given by ``use_settings``, else
    the process environment).

    Tests pass an explicit mapping; errors name the environment variable.
    """
    if environ is None:
        given = _GIVEN.get()
        if given is not None:
            return given
        environ = os.environ
    try:
        # Validate the variables as plain strings (no JSON decoding of list settings), the
        # same way whether they come from the process or from a test.
        values = {
            k[len(ENV_PREFIX) :].lower(): v for k, v in environ.items() if k.startswith(ENV_PREFIX)
        }
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = [
            f"{ENV_PREFIX}{p.split(':', 1)[0].upper()}:{p.split(':', 1)[1]}"
            for p in describe_validation_error(exc)
        ]
        raise SettingsError("environment", problems) from None
