"""The planner: ``(request, playbook, today) -> Plan``. Pure: no I/O, no clock, no Prefect.

Checks the request against the playbook first (optional activities, team roles), so a launch
that cannot be planned fails before anything is written anywhere.
"""

from __future__ import annotations

from datetime import date, timedelta

from tminus.domain.answers import answer_form, clip_text
from tminus.domain.plan import (
    CalendarSpec,
    CheckSpec,
    IssueRole,
    IssueSpec,
    NotificationSpec,
    Plan,
    ref_placeholder,
    request_marker,
)
from tminus.domain.playbook import (
    ITEM_MAX,
    TEXT_MAX,
    TITLE_MAX,
    TRACKING_MAX,
    Activity,
    Frequency,
    Kind,
    Playbook,
    checklist_markdown,
    issue_title,
    render,
    sister_questions,
    template_context,
    time_limit,
)
from tminus.domain.request import LaunchRequest
from tminus.domain.tiering import TierRecommendation, recommend
from tminus.errors import LaunchFileError

EVENT_DESCRIPTION_MAX = 8_000

LAUNCH_DAY = "launch-day"


def check_request(
    request: LaunchRequest, playbook: Playbook, source: str = "launch request"
) -> None:
    """Raise LaunchFileError when the request asks for what this playbook cannot give."""
    problems: list[str] = []
    tier = request.tier
    sometimes = playbook.sometimes_keys(tier)
    known = {a.key: a for a in playbook.activities}
    for i, key in enumerate(request.optional_activities):
        act = known.get(key)
        if act is None:
            problems.append(
                f"optional_activities[{i}]: got {key!r}: no such activity in playbook "
                f"{playbook.name!r}; optional for {tier.value}: {', '.join(sometimes) or 'none'}"
            )
        elif act.frequency(tier) is None:
            allowed = ", ".join(t.value for t in act.tiers)
            problems.append(
                f"optional_activities[{i}]: got {key!r}: not available for {tier.value} "
                f"(only {allowed}); remove it or change the tier"
            )
        elif act.frequency(tier) is Frequency.always:
            problems.append(
                f"optional_activities[{i}]: got {key!r}: already always part of {tier.value}; "
                "remove it"
            )
    for role in request.team:
        if role not in playbook.roles:
            problems.append(
                f"team.{role}: unknown role; roles in playbook {playbook.name!r}: "
                f"{', '.join(playbook.roles)}"
            )
    if problems:
        raise LaunchFileError(source, problems)


def tier_decision(request: LaunchRequest, playbook: Playbook) -> TierRecommendation | None:
    """What the request's questionnaire recommends under this playbook (None: no answers)."""
    if request.tier_assessment is None:
        return None
    return recommend(request.tier_assessment, playbook.tier_recommendation)


def tier_section(request: LaunchRequest, playbook: Playbook) -> str:
    """The tracking issue's record of how the tier was chosen (empty without answers)."""
    decision = tier_decision(request, playbook)
    if decision is None:
        return ""
    lines = [
        "### Tier decision",
        "",
        f"The questionnaire recommends **{decision.tier.value}** ({'; '.join(decision.reasons)}).",
    ]
    override = request.tier_override
    if decision.tier is request.tier:
        lines.append(f"Chosen: **{request.tier.value}**, as recommended.")
    elif override is not None:
        # One line, and no markup: it cannot add checklist items or hidden markers.
        why = " ".join(override.why.split()).replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"Chosen: **{request.tier.value}** by @{override.by}, overriding it: {why}")
    else:
        lines.append(f"Chosen: **{request.tier.value}**, with no override recorded.")
    return "\n".join(lines) + "\n\n"


def tier_warning(request: LaunchRequest, playbook: Playbook) -> str | None:
    """A tier other than the recommended one, with nobody named for it."""
    decision = tier_decision(request, playbook)
    if decision is None or decision.tier is request.tier or request.tier_override is not None:
        return None
    return (
        f"tier {request.tier.value} is not the questionnaire's recommendation, "
        f"{decision.summary()}: set tier: {decision.tier.value}, or record who chose "
        f"{request.tier.value} and why in tier_override (by, why)"
    )


def fit_to_tier(request: LaunchRequest, playbook: Playbook) -> tuple[LaunchRequest, list[str]]:
    """Drop optional activities the (changed) tier makes always-on or unavailable.

    For a tier decided elsewhere (a release's Launch-Tier line overriding a launch file);
    a launch file's own mistakes still fail in ``check_request``.
    """
    keep, notes = [], []
    for key in request.optional_activities:
        try:
            freq = playbook.activity(key).frequency(request.tier)
        except KeyError:
            freq = None
        if freq is Frequency.sometimes:
            keep.append(key)
        else:
            state = "always on" if freq is Frequency.always else "not available"
            notes.append(f"optional activity {key!r} is {state} for {request.tier.value}; ignored")
    return request.model_copy(update={"optional_activities": keep}), notes


def applies(activity: Activity, request: LaunchRequest) -> bool:
    freq = activity.frequency(request.tier)
    if freq is Frequency.always:
        return True
    return freq is Frequency.sometimes and activity.key in request.optional_activities


def assignee_for(role: str, request: LaunchRequest) -> str | None:
    """The person a role maps to; the PMM role defaults to the launch owner."""
    if role in request.team:
        return request.team[role]
    return request.owner if role == "pmm" else None


def blocked_by_line(deps: tuple[str, ...]) -> str:
    """The line an issue that waits for others starts with; the reconciler fills in the refs."""
    refs = ", ".join(ref_placeholder(key) for key in deps)
    return f"**Blocked by** {refs}: start once {'it is' if len(deps) == 1 else 'they are'} closed."


def dependency_warnings(
    playbook: Playbook, planned: set[str], dues: dict[str, tuple[str, date]]
) -> list[str]:
    """A warning for each dependency due after the activity that waits for it."""
    out = []
    for act in playbook.activities:
        if act.key not in planned or act.key not in dues:
            continue
        title, day = dues[act.key]
        for dep in act.depends_on:
            if dep in dues and dues[dep][1] > day:
                dep_title, dep_day = dues[dep]
                out.append(
                    f"{title} ({act.key}) is due {day} but waits for {dep_title} ({dep}), due "
                    f"{dep_day}: move one of the lead times, or drop the dependency"
                )
    return out


def plan_launch(request: LaunchRequest, playbook: Playbook, today: date) -> Plan:
    """Plan a launch. ``today`` is passed in so the same inputs always give the same plan.

    Every template is rendered within one time limit and its own size limit; a template that
    fails for this launch raises PlaybookError naming the entry, before anything is written.
    """
    check_request(request, playbook)
    with time_limit():
        return _plan(request, playbook, today)


def _plan(request: LaunchRequest, playbook: Playbook, today: date) -> Plan:
    slug = request.slug
    base_ctx = template_context(request, playbook)
    common_labels = [*playbook.labels, request.launch_label, request.tier_label]
    warnings: list[str] = []
    source = playbook.source

    def text(template: str, ctx: dict[str, object], where: str, limit: int = TEXT_MAX) -> str:
        return render(template, ctx, where=where, source=source, limit=limit)

    def title_of(template: str, ctx: dict[str, object], where: str) -> str:
        return issue_title(text(template, ctx, where, TITLE_MAX), where=where, source=source)

    def due(lead: int) -> date:
        return request.launch_date - timedelta(days=lead)

    def overdue(day: date, what: str) -> bool:
        if day < today:
            warnings.append(f"{what} was due {day} ({(today - day).days} days ago)")
            return True
        return False

    def labels(*groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for group in (common_labels, *groups, request.labels):
            for label in group:
                out.setdefault(label, None)
        return tuple(out)

    issues: list[IssueSpec] = []
    calendar: list[CalendarSpec] = [
        CalendarSpec(
            key=f"{slug}/calendar/{LAUNCH_DAY}",
            activity_key=LAUNCH_DAY,
            title=f"Launch day: {request.title} ({request.tier.value})",
            description=f"{request.tier.value} launch of {request.title}, "
            f"owned by {request.owner}.",
            day=request.launch_date,
        )
    ]
    checks: list[CheckSpec] = []
    notification: NotificationSpec | None = None
    checklist_lines: list[str] = []
    planned = {a.key for a in playbook.activities if applies(a, request)}
    dues: dict[str, tuple[str, date]] = {}  # activity key -> (title, due date)

    for i, act in enumerate(playbook.activities):
        if not applies(act, request):
            continue
        day = due(act.lead_time_days)
        owner = assignee_for(act.owner_role, request)
        ctx = {**base_ctx, "activity": act, "due": day, "owner": owner or "unassigned"}
        at = f"activities[{i}] ({act.key})"
        title = text(act.title, ctx, f"{at}.title", TITLE_MAX)
        full_title = issue_title(f"{title}: {request.title}", where=f"{at}.title", source=source)
        late = overdue(day, f"{title} ({act.key})")
        who = f"@{owner}" if owner else playbook.roles[act.owner_role]
        dues[act.key] = (title, day)
        if act.kind is Kind.issue:
            key = f"{slug}/activity/{act.key}"
            # A dependency this tier does not plan is no dependency: nothing to wait for.
            deps = tuple(f"{slug}/activity/{d}" for d in act.depends_on if d in planned)
            body = text(act.description, ctx, f"{at}.description")
            if deps:
                body = f"{blocked_by_line(deps)}\n\n{body}".strip()
            items = [
                text(item, ctx, f"{at}.checklist[{j}]", ITEM_MAX)
                for j, item in enumerate(act.checklist)
            ]
            description = "\n\n".join(p for p in (body, checklist_markdown(items)) if p)
            issues.append(
                IssueSpec(
                    key=key,
                    role=IssueRole.activity,
                    title=full_title,
                    description=description,
                    labels=labels(["launch-issue::activity"], act.labels),
                    due_date=day,
                    assignee=owner,
                    activity_key=act.key,
                    overdue=late,
                    depends_on=deps,
                )
            )
            checklist_lines.append(f"**{title}** — {ref_placeholder(key)}, due {day}, {who}")
        elif act.kind is Kind.calendar:
            calendar.append(
                CalendarSpec(
                    key=f"{slug}/calendar/{act.key}",
                    activity_key=act.key,
                    title=full_title,
                    # Google keeps 8,192 characters of an event's description.
                    description=clip_text(
                        text(act.description, ctx, f"{at}.description"), EVENT_DESCRIPTION_MAX
                    ),
                    day=day,
                    invite_sales=act.invite_sales,
                )
            )
            checklist_lines.append(f"**{title}** — on the launch calendar, {day}, {who}")
        elif act.kind is Kind.page_check:
            checks.append(
                CheckSpec(
                    key=f"{slug}/check/{act.key}",
                    activity_key=act.key,
                    title=title,
                    due_date=day,
                    overdue=late,
                )
            )
            checklist_lines.append(f"**{title}** — checked by tminus, due {day}, {who}")
        else:
            notification = NotificationSpec(
                key=f"{slug}/notify/{act.key}",
                activity_key=act.key,
                title=title,
                due_date=day,
                needs_approval=request.tier in playbook.approval_tiers,
                overdue=late,
                kit={str(k): q for k, q in playbook.sister_issue.kit.items()},
            )
            checklist_lines.append(f"**{title}** — sent by tminus, due {day}, {who}")

    warnings += dependency_warnings(playbook, planned, dues)

    sister = playbook.sister_issue
    sister_due = due(sister.lead_time_days)
    questions = sister_questions(playbook)
    form = answer_form(sister.engineering_questions, sister.marketing_questions)
    for feature in request.features:
        ctx = {**base_ctx, "feature": feature}
        title = title_of(sister.title, ctx, "sister_issue.title")
        key = f"{slug}/sister/{feature.slug}"
        late = overdue(sister_due, f"{title} (sister issue)")
        issues.append(
            IssueSpec(
                key=key,
                role=IssueRole.sister,
                title=title,
                description=text(
                    sister.description, {**ctx, "questions": questions}, "sister_issue.description"
                ),
                labels=labels(["launch-issue::sister"], sister.labels),
                due_date=sister_due,
                assignee=request.owner,
                overdue=late,
                questions=tuple(sister.questions),
                answer_form=form,
            )
        )
        checklist_lines.append(
            f"**Sister issue: {feature.name}** — {ref_placeholder(key)}, due {sister_due}, "
            f"@{request.owner}"
        )

    tracking_ctx = {
        **base_ctx,
        "features": request.features,
        "checklist": checklist_markdown(checklist_lines),
        "release_checklist": checklist_markdown(playbook.release_checklist),
    }
    tracking = IssueSpec(
        key=f"{slug}/tracking",
        role=IssueRole.tracking,
        title=title_of(playbook.tracking_issue.title, tracking_ctx, "tracking_issue.title"),
        description=text(
            playbook.tracking_issue.description,
            tracking_ctx,
            "tracking_issue.description",
            TRACKING_MAX,
        )
        + "\n\n"
        + tier_section(request, playbook)
        + request_marker(request),
        labels=labels(["launch-issue::tracking"]),
        due_date=request.launch_date,
        assignee=request.owner,
        overdue=request.launch_date < today,
    )
    if request.launch_date < today:
        warnings.insert(0, f"launch day {request.launch_date} is in the past")
    if (unexplained := tier_warning(request, playbook)) is not None:
        warnings.append(unexplained)

    return Plan(
        request=request,
        playbook=playbook.name,
        today=today,
        tracking=tracking,
        issues=tuple(issues),
        calendar=tuple(calendar),
        checks=tuple(checks),
        notification=notification,
        warnings=tuple(warnings),
    )
