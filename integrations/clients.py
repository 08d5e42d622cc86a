"""The one place clients of external systems are built from settings.

Secrets (GitLab token, Slack webhook URL, Calendar credentials) are unwrapped here and nowhere
else; flows and tasks receive ready adapters.
"""

from __future__ import annotations

from tminus.integrations.gcal import build_calendar as build_calendar
from tminus.integrations.gitlab import GitLabTracker
from tminus.integrations.gitlab import build_tracker as build_tracker
from tminus.integrations.pages import PageChecker
from tminus.integrations.retry import retry_policy
from tminus.integrations.slack import SlackNotifier
from tminus.settings import Settings


def build_checker(settings: Settings) -> PageChecker:
    return PageChecker(
        allowed_hosts=settings.page_hosts,
        allow_private=settings.page_private_ok,
        private_origins=settings.page_private_origins,
    )


def build_notifier(settings: Settings) -> SlackNotifier | None:
    url = settings.sales_webhook
    return SlackNotifier(url, retry=retry_policy(settings)) if url else None


__all__ = ["GitLabTracker", "build_calendar", "build_checker", "build_notifier", "build_tracker"]
