"""``tminus demo``: everything running in the background, and one launch run from its
deployment, as the Prefect UI would start it."""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any

from tminus.deployments.embedded import receiver_service, runner_service, up
from tminus.domain.request import LaunchRequest
from tminus.errors import ServiceError
from tminus.settings import Settings

DEPLOYMENT = "launch/launch"


def _wait_for_deployment(timeout: float = 90) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_deployment_by_name(DEPLOYMENT)
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise ServiceError(
                        "the deployments did not appear; see .tminus/logs/runner.log"
                    ) from None
                time.sleep(0.5)


def _wait_for_run(run_id: Any, timeout: float = 180) -> Any:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            state = run.state
            if state is not None and (state.is_final() or state.is_paused()):
                return run
            if time.monotonic() > deadline:
                return run
            time.sleep(0.5)


def run_demo(settings: Settings, request: LaunchRequest, ui_url: str) -> int:
    from prefect.deployments import run_deployment

    up(settings, extra=[receiver_service(settings), runner_service(settings)])
    _wait_for_deployment()
    flow_run = run_deployment(
        name=DEPLOYMENT, parameters={"request": request.model_dump(mode="json")}, timeout=0
    )
    assert not isinstance(flow_run, Coroutine)
    run = _wait_for_run(flow_run.id)
    state = run.state
    run_url = f"{ui_url}/runs/flow-run/{run.id}"
    print(
        f"Launch {request.slug} ({request.tier.value}) started from the '{DEPLOYMENT}' "
        f"deployment: {state.name if state else 'unknown'}"
    )
    print(f"  Prefect run:     {run_url}")
    if state is not None and state.is_paused():
        print(
            "  ⏸ The sales message waits for your approval: open the run above, click "
            "Resume, tick 'approve'."
        )
    if settings.embedded:
        base = settings.sandbox_url
        print(f"  GitLab issues:   {base}/{request.project}/-/issues")
        print(f"  Launch calendar: {base}/calendar/")
        print(f"  Sales channel:   {base}/slack/")
    names = "launch, on-release, recommend-tier, preview, apply-launches, audit"
    print(f"  Prefect UI:      {ui_url}  (deployments: {names})")
    print(
        f"  Webhook URL:     http://127.0.0.1:{settings.webhook_port}/hooks/gitlab  "
        "(GitLab release, merge request and push hooks; see README)"
    )
    print("Everything keeps running in the background; `tminus down` stops it.")
    failed = state is not None and state.is_final() and not state.is_completed()
    return 1 if failed else 0
