"""The launches repository in GitLab (launches as code), through python-gitlab.

Reads (compare, tree, files, merge requests) and the two writes a preview makes: one merge
request comment kept up to date, found by its marker, and one commit status, written only when
it differs from what GitLab has. Every call goes through ``GitLabCalls`` (one retry owner, the
concurrency bounds); a comment whose answer was lost is looked up by its marker before it is
sent again.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tminus.domain.playbook import Playbook, parse_playbook_file
from tminus.domain.repository import NO_COMMIT, PLAYBOOK_FILE, FileChange, same_project
from tminus.domain.validation import MAX_FILE_BYTES
from tminus.errors import PermanentError, SettingsError
from tminus.integrations.files import load_playbook
from tminus.integrations.gitlab import GitLabCalls, build_calls
from tminus.settings import Settings

# GitLab's commit status states.
STATUS_STATES = frozenset({"pending", "running", "success", "failed", "canceled"})
DESCRIPTION_MAX_CHARS = 255  # GitLab cuts a status description here


@dataclass(frozen=True)
class MergeRequestState:
    """A merge request as GitLab has it now (a hook may be older than this)."""

    iid: int
    state: str  # opened | closed | merged | locked
    head_sha: str
    source_branch: str
    target_branch: str
    web_url: str
    title: str
    source_project_id: int
    target_project_id: int


@dataclass(frozen=True)
class CommitStatus:
    state: str
    description: str


class GitLabRepository(GitLabCalls):
    """What launches as code reads from and writes to the launches repository."""

    _me: int | None = None

    def default_branch(self, project: str) -> str:
        proj = self._call(f"project {project}", lambda: self._gl.projects.get(project))
        return str(proj.default_branch or "main")

    def branch_head(self, project: str, branch: str) -> str | None:
        """The newest commit of ``branch``, or None when the branch does not exist."""
        try:
            found = self._call(
                f"branch {branch} of {project}",
                lambda: self._project(project).branches.get(branch),
            )
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        return str(found.commit["id"])

    def me(self) -> int:
        """The token's user id: only its own comments are tminus's."""
        if self._me is None:
            self._call("the token's user", self._gl.auth)
            assert self._gl.user is not None
            self._me = int(self._gl.user.id)
        return self._me

    def merge_request(self, project: str, iid: int) -> MergeRequestState:
        mr = self._call(
            f"merge request {project}!{iid}",
            lambda: self._project(project).mergerequests.get(iid),
        )
        return MergeRequestState(
            iid=int(mr.iid),
            state=str(mr.state),
            head_sha=str(mr.sha),
            source_branch=str(mr.source_branch),
            target_branch=str(mr.target_branch),
            web_url=str(mr.web_url),
            title=str(mr.title),
            source_project_id=int(mr.source_project_id),
            target_project_id=int(mr.target_project_id),
        )

    def changes(
        self, project: str, before: str, after: str, *, straight: bool = False
    ) -> list[FileChange]:
        """The files changed from ``before`` to ``after`` (GitLab's compare): from their merge
        base (what a merge request brings), or with ``straight`` from ``before`` itself (what
        a push, even a force-push, changed). A ``before`` of zeros (a new branch) lists every
        file at ``after``."""
        if before == NO_COMMIT:
            return [FileChange(p, p, new_file=True) for p in self.files(project, after, "")]
        answer: dict[str, Any] = self._call(
            f"compare {before[:12]}...{after[:12]} in {project}",
            lambda: self._project(project).repository_compare(
                before, after, query_parameters={"straight": "true" if straight else "false"}
            ),
        )
        return [
            FileChange(
                old_path=str(d["old_path"]),
                new_path=str(d["new_path"]),
                new_file=bool(d.get("new_file")),
                deleted_file=bool(d.get("deleted_file")),
                renamed_file=bool(d.get("renamed_file")),
            )
            for d in answer.get("diffs", [])
        ]

    def files(self, project: str, ref: str, folder: str) -> list[str]:
        """Paths of the files in ``folder`` ("" for the whole repository) at ``ref``; none
        when the folder does not exist there (GitLab answers 404 "Tree Not Found")."""
        try:
            entries = self._call(
                f"files of {project}/{folder or '.'} at {ref[:12]}",
                lambda: list(
                    self._project(project).repository_tree(
                        path=folder, ref=ref, recursive=not folder, iterator=True
                    )
                ),
            )
        except PermanentError as exc:
            if exc.status == 404 and folder:
                return []
            raise
        return sorted(str(e["path"]) for e in entries if e.get("type") == "blob")

    def read(self, project: str, path: str, ref: str) -> bytes | None:
        """The file's bytes at ``ref`` (at most ``MAX_FILE_BYTES + 1``: the parser refuses the
        extra byte), or None when it does not exist there."""

        def fetch() -> bytes:
            chunks: list[bytes] = []
            size = 0
            # streamed: a huge file is read only as far as the limit, never held whole
            stream = self._project(project).files.raw(
                file_path=path, ref=ref, streamed=True, iterator=True, chunk_size=64 * 1024
            )
            try:
                for chunk in stream:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        break
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            return b"".join(chunks)[: MAX_FILE_BYTES + 1]

        try:
            return self._call(f"file {path} at {ref[:12]} in {project}", fetch)
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    def find_mr_note(self, project: str, iid: int, marker: str) -> tuple[int, str] | None:
        """The oldest comment tminus (the token's user) wrote on the merge request containing
        ``marker``, as (id, body); anyone else's comment quoting the marker is not it."""
        me = self.me()
        mr = self._project(project).mergerequests.get(iid, lazy=True)
        notes = self._call(
            f"comments of {project}!{iid}",
            lambda: list(mr.notes.list(iterator=True, per_page=100, sort="asc")),
        )
        for note in notes:
            author = getattr(note, "author", None) or {}
            if getattr(note, "system", False) or author.get("id") != me:
                continue
            if marker in (note.body or ""):
                return int(note.id), str(note.body)
        return None

    def write_mr_note(
        self,
        project: str,
        iid: int,
        marker: str,
        body: str,
        existing: tuple[int, str] | None = None,
    ) -> tuple[str, int]:
        """Keep one comment with ``marker`` on the merge request, saying ``body``: created,
        updated in place or left unchanged; returns (what happened, the note id).
        ``existing``: the comment as the caller just found it (else it is looked up)."""
        if existing is None:
            existing = self.find_mr_note(project, iid, marker)
        mr = self._project(project).mergerequests.get(iid, lazy=True)
        if existing is None:

            def find() -> int | None:
                found = self.find_mr_note(project, iid, marker)
                return found[0] if found else None

            note_id = self._call(
                f"comment on {project}!{iid}",
                lambda: int(mr.notes.create({"body": body}).id),
                idempotent=False,
                recover=find,
            )
            return "created", note_id
        note_id, was = existing
        if was == body:
            return "unchanged", note_id
        self._call(
            f"comment {note_id} on {project}!{iid}",
            lambda: mr.notes.update(note_id, {"body": body}),
        )
        return "updated", note_id

    def commit_status(self, project: str | int, sha: str, name: str) -> CommitStatus | None:
        commit = self._gl.projects.get(project, lazy=True).commits.get(sha, lazy=True)
        statuses = self._call(
            f"statuses of {sha[:12]} in {project}",
            lambda: list(commit.statuses.list(iterator=True, name=name)),
        )
        mine = [s for s in statuses if s.name == name]
        if not mine:
            return None
        latest = max(mine, key=lambda s: int(s.id))
        return CommitStatus(str(latest.status), str(latest.description or ""))

    def set_commit_status(
        self,
        project: str | int,
        sha: str,
        *,
        name: str,
        state: str,
        description: str,
        target_url: str | None = None,
        ref: str | None = None,
    ) -> str:
        """Set the commit status ``name`` on ``sha`` (in ``project``: a fork's commit gets it
        in the fork, with its branch as ``ref``). Written only when GitLab's differs: GitLab
        refuses a repeat of the same state, so after a lost answer the status is read back
        rather than sent again. Returns created/updated/unchanged."""
        if state not in STATUS_STATES:
            raise ValueError(f"unknown commit status state {state!r}")
        description = description[:DESCRIPTION_MAX_CHARS]
        wanted = CommitStatus(state, description)
        current = self.commit_status(project, sha, name)
        if current == wanted:
            return "unchanged"
        data: dict[str, Any] = {"state": state, "name": name, "description": description}
        if target_url:
            data["target_url"] = target_url
        if ref:
            data["ref"] = ref
        commit = self._gl.projects.get(project, lazy=True).commits.get(sha, lazy=True)

        def landed() -> bool | None:
            return True if self.commit_status(project, sha, name) == wanted else None

        self._call(
            f"status {name} of {sha[:12]}",
            lambda: bool(commit.statuses.create(data)),
            idempotent=False,
            recover=landed,
        )
        return "created" if current is None else "updated"


def check_launches_repo(project: str, settings: Settings) -> None:
    """Refuse to act on a project that is not TMINUS_LAUNCHES_REPO (a run started by hand
    could name any)."""
    if not same_project(settings.launches_repo, project):
        configured = settings.launches_repo or "unset"
        raise SettingsError(
            "TMINUS_LAUNCHES_REPO",
            [
                f"{project} is not the launches repository (TMINUS_LAUNCHES_REPO is "
                f"{configured}); set TMINUS_LAUNCHES_REPO={project} to act on it"
            ],
        )


def build_repository(settings: Settings) -> GitLabRepository:
    return build_calls(settings, GitLabRepository)


@lru_cache(maxsize=8)
def _parse_playbook(raw: bytes, source: str) -> Playbook:
    # Keyed by content: an unchanged playbook is not validated (and its templates
    # trial-rendered) again on every run.
    return parse_playbook_file(raw, source)


def repository_playbook(repo: GitLabRepository, project: str, ref: str) -> Playbook | None:
    """The playbook in the launches repository at ``ref``, or None when it has none."""
    raw = repo.read(project, PLAYBOOK_FILE, ref)
    return None if raw is None else _parse_playbook(raw, f"{project}:{PLAYBOOK_FILE}@{ref}")


def team_playbook(settings: Settings) -> Playbook:
    """The playbook every run uses: the launches repository's ``playbook.yaml`` on its default
    branch when TMINUS_LAUNCHES_REPO is set and the file exists (reviewed like code), else
    TMINUS_PLAYBOOK, else the packaged default."""
    if settings.launches_repo:
        with closing(build_repository(settings)) as repo:
            project = settings.launches_repo
            found = repository_playbook(repo, project, repo.default_branch(project))
        if found is not None:
            return found
    return load_playbook(settings.playbook)
