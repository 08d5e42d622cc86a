"""Settings: environment variables prefixed ``TMINUS_``, built by ``load_settings()``.

Nothing here is read at import time. With no GitLab URL set, tminus runs on the *embedded
default*: a local Prefect server and local stand-ins for GitLab (and later Calendar and Slack),
with their state under ``TMINUS_HOME`` and no credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tminus.errors import SettingsError
from tminus.validation import describe_validation_error

ENV_PREFIX = "TMINUS_"


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
        default=4, ge=1, le=32, description="GitLab requests in flight at once, per launch run."
    )
    timezone: str = Field(
        default="UTC", description="Time zone that decides what 'today' is (IANA name)."
    )
    prefect_port: int = Field(
        default=4280, ge=1024, le=65535, description="Embedded Prefect server."
    )
    sandbox_port: int = Field(default=4281, ge=1024, le=65535, description="Embedded stand-ins.")

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


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the process environment).

    Tests pass an explicit mapping; errors name the environment variable.
    """
    try:
        if environ is None:
            return Settings()
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
