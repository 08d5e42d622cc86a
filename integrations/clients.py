"""The one place clients of external systems are built from settings.

Secrets (GitLab token, Slack webhook URL, Calendar credentials) are unwrapped here and nowhere
else; flows and tasks receive ready adapters.
"""

from __future__ import annotations

from dataclasses import dataclass

from tminus.domain.calendar import LaunchCalendar
from tminus.domain.issues import IssueTracker
from tminus.integrations.gcal import build_calendar as build_calendar
from tminus.integrations.gitlab import GitLabTracker
from tminus.integrations.gitlab import build_tracker as build_tracker
from tminus.integrations.pages import HttpPageReader, PageReader
from tminus.integrations.retry import retry_policy
from tminus.integrations.slack import SalesChannel, SlackNotifier
from tminus.settings import Settings


def build_page_reader(settings: Settings) -> HttpPageReader:
    """The page reader the page checks use: allowed hosts and private origins from settings."""
    return HttpPageReader(
        allowed_hosts=settings.page_hosts,
        allow_private=settings.page_private_ok,
        private_origins=settings.page_private_origins,
    )


def build_notifier(settings: Settings) -> SalesChannel | None:
    url = settings.sales_webhook
    return SlackNotifier(url, retry=retry_policy(settings)) if url else None


@dataclass(frozen=True)
class Systems:
    """Every system a launch talks to, as ready adapters (ports)."""

    tracker: IssueTracker
    calendar: LaunchCalendar
    calendar_id: str
    pages: PageReader
    notifier: SalesChannel | None

    def __enter__(self) -> Systems:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections adapters keep alive (the Calendar client's, today)."""
        self.calendar.close()
        close = getattr(self.tracker, "close", None)  # not part of the tracker port
        if close is not None:
            close()


def connect(settings: Settings) -> Systems:
    """The adapters the settings describe. Builds clients only: no request is sent."""
    return Systems(
        tracker=build_tracker(settings),
        calendar=build_calendar(settings),
        calendar_id=settings.calendar_id,
        pages=build_page_reader(settings),
        notifier=build_notifier(settings),
    )


__all__ = [
    "GitLabTracker",
    "build_calendar",
    "build_notifier",
    "build_page_reader",
    "build_tracker",
]
