"""End to end, as users run it: `tminus serve` and `tminus webhook` as real processes on the
session's Prefect server; a GitLab delivery starts a run through the deployment trigger; the
audit deployment runs on its schedule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tminus_sandbox.app import free_port

from .conftest import ROOT, SandboxClient, sandbox_env

pytestmark = pytest.mark.e2e

TOKEN = "e2e-hook-secret"
PLANS = "marketing/launch-plans-e2e"
FIXTURES = ROOT / "tests" / "fixtures"


def delivery() -> tuple[dict[str, Any], dict[str, str]]:
    payload = json.loads((FIXTURES / "gitlab_release_create.json").read_text())
    headers = json.loads((FIXTURES / "gitlab_webhook_headers_release.json").read_text())
    headers["X-Gitlab-Token"] = TOKEN
    return payload, headers


def _start(argv: list[str], log_path: Path, mode: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a long-lived child in its own session, writing to ``log_path``. The child gets its
    own copy of the log's descriptor; ours is closed at once, not left to the GC."""
    with open(log_path, mode) as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )


@pytest.fixture(scope="module")
def real_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` with all its services (the test harness runs no
    scheduler), on its own SQLite file, its scheduler looping every 2 s."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    home = tmp_path_factory.mktemp("prefect-home")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    env.pop("PREFECT_API_URL", None)
    # The child writes to its own copy of the log's descriptor; ours is closed at once.
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    wait_for(lambda: _up(api.removesuffix("/api") + "/api", "/health"), 90, "the Prefect server")
    with temporary_settings({PREFECT_API_URL: api}):
        yield api
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(
    real_prefect: str,
    sandbox_server: SandboxClient,
    no_approval_playbook: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    sandbox_server.reset()
    sandbox_server.sandbox.slack.rate_limit = None
    port = free_port()
    env = {
        **os.environ,
        **sandbox_env(sandbox_server.url),
        "PREFECT_API_URL": real_prefect,
        "TMINUS_HOME": str(tmp_path_factory.mktemp("home")),
        # the default playbook: L1 sales messages wait for approval
        "TMINUS_WEBHOOK_TOKEN": TOKEN,
        "TMINUS_WEBHOOK_PORT": str(port),
        "TMINUS_AUDIT_CRON": "* * * * *",
        "TMINUS_AUDIT_PROJECTS": "marketing/launches",
        "TMINUS_LAUNCHES_REPO": PLANS,
    }
    logs = tmp_path_factory.mktemp("logs")
    procs = [
        _start(
            [sys.executable, "-m", "tminus", *argv],
            logs / f"{name}.log",
            "wb",
            cwd=ROOT,
            env=env,
        )
        for name, argv in (
            ("serve", ["serve", "--no-receiver"]),
            ("webhook", ["webhook", "--port", str(port)]),
        )
    ]
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deployments = {}
    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        for name in (
            "launch/launch",
            "on-release/on-release",
            "preview/preview",
            "apply-launches/apply-launches",
            "audit/audit",
        ):
            while name not in deployments:
                try:
                    deployments[name] = client.read_deployment_by_name(name)
                except ObjectNotFound:
                    if time.monotonic() > deadline:
                        raise AssertionError((logs / "serve.log").read_text()[-3000:]) from None
                    time.sleep(0.5)
    hook = f"http://127.0.0.1:{port}"
    while not _up(hook):
        if time.monotonic() > deadline:
            raise AssertionError((logs / "webhook.log").read_text()[-3000:])
        time.sleep(0.3)
    yield {"hook": hook, "deployments": deployments, "logs": logs}
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=30)


def _up(url: str, path: str = "/healthz") -> bool:
    try:
        return httpx.get(f"{url}{path}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def runs_of(deployment: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_release_delivery_starts_exactly_one_run(
    served: dict[str, Any], sandbox_server: SandboxClient
) -> None:
    on_release = served["deployments"]["on-release/on-release"]
    payload, headers = delivery()
    started = time.monotonic()
    answer = httpx.post(f"{served['hook']}/hooks/gitlab", json=payload, headers=headers)
    assert answer.status_code == 202, answer.text
    assert len(wait_for(lambda: runs_of(on_release), 10, "the on-release run")) == 1
    assert time.monotonic() - started < 10
    final = wait_for(
        lambda: next((r for r in runs_of(on_release) if r.state and r.state.is_final()), None),
        90,
        "the on-release run to finish",
    )
    assert final.state.is_completed(), (served["logs"] / "serve.log").read_text()[-3000:]
    project = sandbox_server.gitlab().projects.get("gitlab-org/release-webhook-example")
    titles = [i.title for i in project.issues.list(get_all=True)]
    assert "Launch: v1.1 (L3, 2020-11-02)" in titles

    again = httpx.post(f"{served['hook']}/hooks/gitlab", json=payload, headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    wrong = httpx.post(
        f"{served['hook']}/hooks/gitlab", json=payload, headers={**headers, "X-Gitlab-Token": "x"}
    )
    assert wrong.status_code == 401
    time.sleep(4)  # longer than poll interval plus trigger latency
    assert len(runs_of(on_release)) == 1


def test_audit_runs_on_its_schedule(served: dict[str, Any]) -> None:
    audit = served["deployments"]["audit/audit"]
    assert audit.schedules and audit.schedules[0].schedule.cron == "* * * * *"
    done = wait_for(
        lambda: next((r for r in runs_of(audit) if r.state and r.state.is_completed()), None),
        150,
        "a scheduled audit run to complete",
    )
    assert done.state.is_completed()


def chromium() -> str:
    """Debian's Chromium; missing is a failure in CI (.ci/run installs it), a skip elsewhere."""
    import shutil

    path = shutil.which("chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must install chromium (apt-get) and playwright (pip)")
        pytest.skip("needs Debian's chromium and the playwright package")
    return path


def test_launch_started_from_the_ui_form_completes(
    served: dict[str, Any], real_prefect: str, sandbox_server: SandboxClient
) -> None:
    """A PMM fills the launch deployment's custom-run form in a real browser and submits."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    browser_path = chromium()
    launch_dep = served["deployments"]["launch/launch"]
    ui = real_prefect.removesuffix("/api")
    docs = f"{sandbox_server.url}/docs/dark-mode"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=browser_path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        failures: list[str] = []  # what the UI's API calls answered with an error, to report

        def record(response: Any) -> None:
            if response.status >= 400:
                try:
                    body = response.text()[:500]
                except Exception as exc:  # the body may be gone by now
                    body = f"(body unreadable: {exc})"
                failures.append(
                    f"{response.request.method} {response.url} -> {response.status}: {body}"
                )

        page.on("response", record)
        page.on("requestfailed", lambda r: failures.append(f"{r.method} {r.url}: {r.failure}"))
        page.goto(f"{ui}/deployments/deployment/{launch_dep.id}/run")
        page.wait_for_selector("text=Launch Date", timeout=30_000)

        def prop(label: str) -> Any:
            """The innermost form property with this label."""
            title = page.locator(".schema-form-property__label").get_by_text(label, exact=True)
            return page.locator(".schema-form-property").filter(has=title).last

        def fill(label: str, value: str) -> None:
            prop(label).locator("textarea, input").first.fill(value)

        fill("Slug", "ui-launch")
        fill("Title", "Launched from the UI")
        tier = prop("Tier").locator(".p-select-button__control")
        tier.press("ArrowDown")  # opens the tier dropdown
        page.get_by_role("option", name="L3").click()
        prop("Launch Date").locator(".p-date-button__control").click()
        page.locator("input[type=date]").fill("2027-01-19")
        page.get_by_role("button", name="Apply").click()
        fill("Owner", "priya.pmm")
        fill("Project", "marketing/launches")
        prop("Features").get_by_role("button", name="Add item").click()
        fill("Name", "Dark mode")
        fill("Summary", "A dark theme for the whole web UI, in beta.")
        prop("Docs Urls").get_by_role("button", name="Add item").click()
        prop("Docs Urls").locator("textarea, input").first.fill(docs)
        fill("Features Page Title", "Dark mode")
        submit = page.get_by_role("button", name="Submit")
        submit.wait_for(state="visible")

        def sent() -> bool:
            """Submit; after a submit the UI goes back to the deployment page."""
            submit.click()
            try:
                page.wait_for_url(lambda u: not u.split("?")[0].endswith("/run"), timeout=30_000)
            except PlaywrightTimeout:
                return False
            return True

        try:
            # A PMM whose submit meets a server error (a 5xx: SQLite busy on a loaded machine)
            # sees "Something went wrong" and submits again; a form refused otherwise fails.
            if not sent() and not (any(" -> 5" in f for f in failures) and sent()):
                raise AssertionError(
                    "the form was not sent; the API answered:\n"
                    + "\n".join(failures or ["(no failed request)"])
                    + f"\nthe page shows:\n{page.inner_text('body')[-1500:]}"
                )
            if failures:
                print("the UI met API errors on the way:", *failures, sep="\n")
        finally:
            browser.close()

    def ui_run() -> Any:
        for run in runs_of(launch_dep):
            if run.parameters["request"]["slug"] == "ui-launch":
                return run
        return None

    run = wait_for(ui_run, 15, "the run submitted from the form")
    request = run.parameters["request"]
    assert request["tier"] == "L3" and request["launch_date"] == "2027-01-19"
    final = wait_for(
        lambda: (r := ui_run()) is not None and r.state.is_final() and r, 90, "the UI run to end"
    )
    assert final.state.is_completed(), (served["logs"] / "serve.log").read_text()[-3000:]
    project = sandbox_server.gitlab().projects.get("marketing/launches")
    titles = [i.title for i in project.issues.list(get_all=True, labels=["launch::ui-launch"])]
    assert "Launch: Launched from the UI (L3, 2027-01-19)" in titles


def test_accepted_delivery_survives_a_killed_receiver_while_prefect_is_down(
    served: dict[str, Any], real_prefect: str, tmp_path: Path
) -> None:
    """GitLab gets its 202 while Prefect is unreachable; the receiver is killed (no flush);
    a new receiver on the same state folder delivers it and the run starts."""
    on_release = served["deployments"]["on-release/on-release"]
    port = free_port()
    env = {
        **os.environ,
        "TMINUS_HOME": str(tmp_path),
        "TMINUS_WEBHOOK_TOKEN": TOKEN,
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",  # nothing listens there
    }

    def receiver(api: str) -> subprocess.Popen[bytes]:
        proc = _start(
            [sys.executable, "-m", "tminus", "webhook", "--port", str(port)],
            tmp_path / "webhook.log",
            "ab",
            cwd=ROOT,
            env={**env, "PREFECT_API_URL": api},
        )
        wait_for(lambda: _up(f"http://127.0.0.1:{port}"), 30, "the receiver")
        return proc

    first = receiver(env["PREFECT_API_URL"])
    payload, headers = delivery()
    payload = {**payload, "tag": "v2.0", "name": "v2.0"}
    headers = {**headers, "Idempotency-Key": "kill-test-delivery"}
    answer = httpx.post(f"http://127.0.0.1:{port}/hooks/gitlab", json=payload, headers=headers)
    assert answer.status_code == 202
    health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
    assert health["pending"] == 1 and health["prefect"] == "unreachable"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)

    second = receiver(real_prefect)
    try:

        def v2_run() -> Any:
            return next(
                (r for r in runs_of(on_release) if r.parameters["release"]["tag"] == "v2.0"),
                None,
            )

        run = wait_for(v2_run, 20, "the run of the kept delivery")
        final = wait_for(
            lambda: (r := v2_run()) is not None and r.state.is_final() and r, 90, "it to end"
        )
        assert final.state.is_completed()
        assert run.parameters["release"]["delivery"] == "kill-test-delivery"
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=30)


def test_l1_from_the_deployment_suspends_for_approval_then_sends(
    served: dict[str, Any], sandbox_server: SandboxClient, l1: Any
) -> None:
    """In a deployment run the approval wait suspends the run (its process exits, freeing the
    runner); Resume with the PMM's answer re-runs it to the end and sales is told once."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input

    from .test_launch_everything import retarget

    request = retarget(l1, sandbox_server.url).model_dump(mode="json")
    flow_run = run_deployment(name="launch/launch", parameters={"request": request}, timeout=0)

    def state() -> Any:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run.id).state

    suspended = wait_for(lambda: (s := state()) and s.is_paused() and s, 90, "the suspension")
    assert suspended.name == "Suspended"
    # Prefect saves the approval form's schema just after the Suspended state: resuming in
    # between fails ("Run input schema not found").
    schema = suspended.state_details.run_input_keyset["schema"]
    wait_for(lambda: read_flow_run_input(schema, flow_run_id=flow_run.id), 30, "the form")
    messages = sandbox_server.http.get("/slack/messages").json()
    assert not [m for m in messages if "Code Review Agent" in m["payload"]["text"]]
    resume_flow_run(flow_run.id, run_input={"approve": True, "comment": "ship it"})
    final = wait_for(lambda: (s := state()) and s.is_final() and s, 120, "the resumed run")
    assert final.is_completed(), (served["logs"] / "serve.log").read_text()[-3000:]
    messages = sandbox_server.http.get("/slack/messages").json()
    assert len([m for m in messages if "Code Review Agent" in m["payload"]["text"]]) == 1


def test_a_900_kb_release_description_starts_its_run(
    served: dict[str, Any], sandbox_server: SandboxClient
) -> None:
    """Prefect refuses run parameters over 512 KiB: the receiver sends the run an excerpt
    of the notes that keeps the Launch-Tier line, and the run starts and completes."""
    on_release = served["deployments"]["on-release/on-release"]
    payload, headers = delivery()
    notes = "Dark mode for everyone.\n" + "A changelog line.\n" * 50_000 + "Launch-Tier: L2\n"
    assert len(notes) > 900_000
    payload = {**payload, "tag": "v3.0", "name": "v3.0", "description": notes}
    headers = {**headers, "Idempotency-Key": "big-notes-delivery"}
    answer = httpx.post(f"{served['hook']}/hooks/gitlab", json=payload, headers=headers)
    assert answer.status_code == 202, answer.text

    def v3_run() -> Any:
        return next(
            (r for r in runs_of(on_release) if r.parameters["release"]["tag"] == "v3.0"), None
        )

    run = wait_for(v3_run, 20, "the run of the 900 KB delivery")
    release = run.parameters["release"]
    assert len(json.dumps(run.parameters)) < 16 * 1024
    assert release["description"].startswith("Launch-Tier: L2\nDark mode for everyone.\n")
    final = wait_for(lambda: (r := v3_run()) is not None and r.state.is_final() and r, 90, "it")
    assert final.state.is_completed(), (served["logs"] / "serve.log").read_text()[-3000:]
    project = sandbox_server.gitlab().projects.get("gitlab-org/release-webhook-example")
    titles = [i.title for i in project.issues.list(get_all=True, labels=["launch-tier::L2"])]
    assert "Launch: v3.0 (L2, 2020-11-02)" in titles


def test_launches_as_code_through_the_receiver_and_serve(
    served: dict[str, Any], sandbox_server: SandboxClient
) -> None:
    """The stand-in GitLab sends its hooks to the real receiver: a merge request gets one plan
    preview comment, updated on the next push; merging runs exactly the changed launch; a
    resent push delivery starts nothing new."""
    from tminus.integrations.files import load_launch_file

    from .test_launch_everything import retarget

    deployments = served["deployments"]
    launch_dep, apply_dep = (
        deployments["launch/launch"],
        deployments["apply-launches/apply-launches"],
    )
    preview_dep = deployments["preview/preview"]
    gl = sandbox_server.gitlab()
    project = gl.projects.get(PLANS)
    project.hooks.create(
        {
            "url": f"{served['hook']}/hooks/gitlab",
            "token": TOKEN,
            "push_events": True,
            "merge_requests_events": True,
        }
    )
    request = retarget(load_launch_file(ROOT / "examples" / "l2.yaml"), sandbox_server.url)
    request = request.model_copy(update={"slug": "as-code", "title": "Launched as code"})
    path = "launches/as-code.yaml"

    def ours() -> list[Any]:
        return [r for r in runs_of(launch_dep) if r.parameters["request"]["slug"] == "as-code"]

    def finished(runs: list[Any], n: int) -> bool:
        return len(runs) == n and all(r.state and r.state.is_final() for r in runs)

    project.commits.create(
        {
            "branch": "main",
            "commit_message": "Add the as-code launch",
            "actions": [
                {"action": "create", "file_path": path, "content": request.model_dump_json()}
            ],
        }
    )
    first = wait_for(
        lambda: (runs := ours()) and finished(runs, 1) and runs, 150, "the first launch run"
    )
    assert first[0].state.is_completed(), (served["logs"] / "serve.log").read_text()[-3000:]

    project.branches.create({"branch": "later", "ref": "main"})
    moved = request.model_copy(update={"launch_date": request.launch_date + timedelta(days=7)})
    project.commits.create(
        {
            "branch": "later",
            "commit_message": "A week later",
            "actions": [
                {"action": "update", "file_path": path, "content": moved.model_dump_json()}
            ],
        }
    )
    mr = project.mergerequests.create(
        {"source_branch": "later", "target_branch": "main", "title": "As code: a week later"}
    )

    def comment() -> Any:
        notes = [n for n in mr.notes.list(get_all=True) if "tminus:preview" in n.body]
        return notes[0] if len(notes) == 1 else None

    note = wait_for(comment, 120, "the preview comment")
    assert f"-&gt; {moved.launch_date.isoformat()}" in note.body
    assert "would send the correction" in note.body  # sales heard of the first date

    later = moved.model_copy(update={"title": "Launched as code, renamed"})
    project.commits.create(
        {
            "branch": "later",
            "commit_message": "Rename",
            "actions": [
                {"action": "update", "file_path": path, "content": later.model_dump_json()}
            ],
        }
    )
    head = project.mergerequests.get(mr.iid).sha
    updated = wait_for(
        lambda: (n := comment()) is not None and head[:8] in n.body and n,
        120,
        "the updated comment",
    )
    assert updated.id == note.id
    assert len([n for n in mr.notes.list(get_all=True) if "tminus:preview" in n.body]) == 1
    assert wait_for(
        lambda: finished(runs_of(preview_dep), len(runs_of(preview_dep))), 60, "previews"
    )
    assert not [r for r in runs_of(preview_dep) if not r.state.is_completed()]

    applies_before = len(runs_of(apply_dep))
    project.mergerequests.get(mr.iid).merge()
    runs = wait_for(
        lambda: (r := ours()) and finished(r, 2) and r, 150, "the launch run of the merge"
    )
    assert all(r.state.is_completed() for r in runs), (served["logs"] / "serve.log").read_text()[
        -3000:
    ]
    tracking = [
        i
        for i in gl.projects.get(request.project).issues.list(
            get_all=True, labels=["launch::as-code"]
        )
        if i.title.startswith("Launch:")
    ]
    assert [i.title for i in tracking] == [
        f"Launch: Launched as code, renamed (L2, {moved.launch_date.isoformat()})"
    ]
    applies = wait_for(
        lambda: len(runs_of(apply_dep)) > applies_before and runs_of(apply_dep), 30, "apply"
    )

    # GitLab's "Resend request" on the merge's push: the same Idempotency-Key, nothing new.
    pushes = [
        d
        for d in httpx.get(f"{sandbox_server.url}/_sandbox/gitlab/hook_deliveries").json()
        if d["event"] == "Push Hook"
    ]
    resent = httpx.post(
        f"{sandbox_server.url}/_sandbox/gitlab/hook_deliveries/{pushes[-1]['id']}/resend"
    ).json()
    assert "duplicate" in json.dumps(resent)
    time.sleep(4)  # longer than the sender's interval plus trigger latency
    assert len(runs_of(apply_dep)) == len(applies) and len(ours()) == 2
