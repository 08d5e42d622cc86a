"""Launches as code: the launches repository's convention and the hooks that act on it (pure).

A launches repository is a GitLab project holding one YAML launch file per launch under
``launches/`` (``.yaml`` or ``.yml``) and, optionally, the team's playbook as ``playbook.yaml``
at its root. ``tminus init`` scaffolds one.

- A merge request that touches launch files or the playbook gets a preview: the
  ``preview`` flow dry-runs every affected launch (a playbook change affects every launch
  file) and keeps one comment on the merge request up to date.
- A push to the default branch (a merge) applies the launch files it changed through the
  ``launch`` flow, one run per launch; a deleted file cancels its launch, deleting nothing.

``MergeRequestChange`` and ``Push`` are those flows' parameters; the webhook receiver builds the
events' payloads as them, bounded like ``Release`` (``tminus.domain.release``), so whatever it
accepts Prefect accepts as a run's parameters.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tminus.domain.release import (
    DeliveryKey,
    GitLabId,
    ProjectPath,
    ReleaseName,
    WebUrl,
    check_tag_name,
)

LAUNCHES_FOLDER = "launches"
PLAYBOOK_FILE = "playbook.yaml"
LAUNCH_SUFFIXES = (".yaml", ".yml")
BRANCH_PREFIX = "refs/heads/"
# git's object names: SHA-1 (40 hex digits) or SHA-256 (64).
SHA_PATTERN = r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$"
# GitLab's "no commit" (the before of a new branch, the after of a deleted one).
NO_COMMIT = "0" * 40
# How many launch files one preview dry-runs (the rest are checked, not dry-run): each is a
# dry run, and the comment must stay well under GitLab's 1,000,000-character note limit.
MAX_LAUNCHES_PER_CHANGE = 200
REPO_PATH_MAX_CHARS = 1024

Sha = Annotated[str, Field(pattern=SHA_PATTERN)]
BranchName = Annotated[
    str, Field(min_length=1, max_length=255), AfterValidator(check_tag_name)
]  # a branch name follows the same ref-name rules as a tag


def _check_branch_ref(value: str) -> str:
    if not value.startswith(BRANCH_PREFIX):
        raise ValueError(f"is not a branch ref; GitLab sends {BRANCH_PREFIX}<branch>")
    check_tag_name(value.removeprefix(BRANCH_PREFIX))
    return value


BranchRef = Annotated[str, Field(min_length=12, max_length=300), AfterValidator(_check_branch_ref)]


class RepoProject(BaseModel):
    """The launches repository as a hook names it."""

    model_config = ConfigDict(extra="ignore")

    id: GitLabId = Field(description="The project's GitLab id.")
    path_with_namespace: ProjectPath = Field(description="The project's full path.")
    web_url: WebUrl | None = Field(default=None, description="The project's page.")
    default_branch: BranchName | None = Field(default=None, description="Usually main.")


class MergeRequestChange(BaseModel):
    """A merge request opened, reopened or pushed to (the ``preview`` flow's parameter)."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["open", "reopen", "update"] = Field(description="What happened to it.")
    iid: GitLabId = Field(description="The merge request's number in its project (!iid).")
    title: ReleaseName = Field(default="", description="The merge request's title.")
    source_branch: BranchName
    target_branch: BranchName
    head_sha: Sha = Field(description="The newest commit of the source branch.")
    url: WebUrl | None = Field(default=None, description="The merge request's page.")
    project: RepoProject = Field(description="The target project (the launches repository).")
    delivery: DeliveryKey | None = Field(default=None, description="The webhook delivery.")


class Push(BaseModel):
    """A push to a branch (the ``apply-launches`` flow's parameter)."""

    model_config = ConfigDict(extra="ignore")

    ref: BranchRef = Field(description="The branch pushed to, e.g. refs/heads/main.")
    before: Sha = Field(description="The branch's commit before the push (zeros: new branch).")
    after: Sha = Field(description="The branch's commit after the push.")
    project: RepoProject
    delivery: DeliveryKey | None = Field(default=None, description="The webhook delivery.")

    @property
    def branch(self) -> str:
        return self.ref.removeprefix(BRANCH_PREFIX)


# --- the convention ------------------------------------------------------------------------


def is_launch_path(path: str) -> bool:
    """A launch file: directly in ``launches/``, named ``*.yaml`` or ``*.yml``."""
    folder, name = posixpath.split(path)
    return folder == LAUNCHES_FOLDER and name.endswith(LAUNCH_SUFFIXES) and not name.startswith(".")


def same_project(configured: str | None, path: str) -> bool:
    """Whether ``path`` is the configured project: GitLab's paths are case-insensitive, and a
    setting may carry stray spaces."""
    return configured is not None and configured.strip().lower() == path.lower()


def is_playbook_path(path: str) -> bool:
    return path == PLAYBOOK_FILE


@dataclass(frozen=True)
class FileChange:
    """One file a commit range changed (GitLab's compare ``diffs`` entry, without the diff)."""

    old_path: str
    new_path: str
    new_file: bool = False
    deleted_file: bool = False
    renamed_file: bool = False


@dataclass(frozen=True)
class Affected:
    """What a change means for launches: files to (dry-)run at the new commit, files whose
    launch is cancelled (read at the old commit), and whether the playbook changed."""

    run: tuple[str, ...]
    cancel: tuple[str, ...]
    playbook_changed: bool

    @property
    def empty(self) -> bool:
        return not (self.run or self.cancel or self.playbook_changed)


def affected_launches(changes: Iterable[FileChange], launch_files_now: Iterable[str]) -> Affected:
    """The launch files a change affects. ``launch_files_now`` lists the launch files at the
    new commit; every one of them is affected when the playbook changed. A launch file renamed
    within ``launches/`` is the same launch, run from its new path; one moved out (or deleted)
    is cancelled."""
    run: set[str] = set()
    cancel: set[str] = set()
    playbook = False
    for change in changes:
        if is_playbook_path(change.new_path) or is_playbook_path(change.old_path):
            playbook = True
        if change.deleted_file:
            if is_launch_path(change.old_path):
                cancel.add(change.old_path)
            continue
        if is_launch_path(change.new_path):
            run.add(change.new_path)
        elif change.renamed_file and is_launch_path(change.old_path):
            cancel.add(change.old_path)
    if playbook:
        run.update(path for path in launch_files_now if is_launch_path(path))
    return Affected(tuple(sorted(run)), tuple(sorted(cancel - run)), playbook)
