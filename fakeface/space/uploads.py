"""Which files a client may name: uploads this server handed out (to that client) and the app's own cached files.

Gradio events name their input files by server path. With `mount_gradio_app` Gradio's own check that such a
path lies in its upload folder is switched off (it runs only once `launch()` has set `has_launched`), and the
app's events take raw payloads (`preprocess=False`), so without this module a client could name any file on
disk. Here, before Gradio or the app opens anything:

* `checked_path` (stateless) accepts only a local path whose real path (symlinks resolved) lies inside the
  upload folder, or is one of the app's kept files (cached examples). URLs, other paths, and anything that is
  not a path are refused with one message, the same whether the file exists or not.
* `UploadTracker` (stateful) also binds each upload to the Gradio session that first uses it: the upload
  route's replies are counted (`UploadClaims`), an event may use an upload only if one handed out is still
  unbound or its own session already holds it, and an upload is deleted (`release`) only by the session that
  used it, after its last use.

Nothing here imports Gradio, so it can be tested on its own.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ..errors import FakefaceError

# One sentence for every refusal: a missing file, a path outside the upload folder, another client's upload.
UPLOAD_AGAIN = "the upload is no longer available; upload the image again."


# This server never downloads what a client names (no server-side requests on a client's behalf), so a URL
# (gradio_client's handle_file("https://..."), the "Use via API" page's example) gets a sentence of its own.
NO_URLS = ("this server does not fetch images from URLs; send the image file itself (gradio_client: "
           "handle_file('photo.jpg') with a local path).")


class UploadRefused(FakefaceError):
    """A file reference this server will not open: UPLOAD_AGAIN whatever is or is not on disk, or NO_URLS."""

    def __init__(self, message: str = UPLOAD_AGAIN):
        super().__init__(message)


def payload_path(payload) -> str | None:
    """The path a raw Gradio file payload names: FileData's "path", or the payload itself when it is a string."""
    if isinstance(payload, dict):
        path = payload.get("path")
        return path if isinstance(path, str) else None
    return payload if isinstance(payload, str) else None


def _real(path: str | Path) -> str:
    return os.path.realpath(os.fspath(path))


def checked_path(path, upload_root: str | Path, keep: Iterable[str | Path] = ()) -> str:
    """The real path (symlinks resolved) of `path` when a client may name it, else UploadRefused.

    Allowed: a file inside `upload_root` (Gradio's upload folder, where its cached examples live too) or one of
    `keep`. Nothing is opened or even checked for existence here, so the answer says nothing about what is on
    disk outside the upload folder.
    """
    if isinstance(path, str) and path.lower().startswith(("http://", "https://")):
        raise UploadRefused(NO_URLS)
    if not isinstance(path, str) or not path or "\0" in path or "://" in path or path.startswith("data:"):
        raise UploadRefused()
    if not os.path.isabs(path):
        raise UploadRefused()  # Gradio hands out absolute paths; a relative one would mean the server's cwd
    real = _real(path)
    if real in {_real(k) for k in keep}:
        return real
    root = _real(upload_root)
    if os.path.commonpath([real, root]) != root or real == root:
        raise UploadRefused()
    return real


class UploadTracker:
    """Counts the uploads handed out per file, binds them to the sessions that use them, deletes after last use.

    Gradio stores an upload under a hash of its content, by its name: two identical uploads (the same photo
    sent by two clients) share one path. So each upload the upload route hands out is counted as unbound
    (`claim`); an event's first use of it binds one of those to its session (`admit`); the same session may use
    it again (the page re-analyses its image when the threshold moves); and `release` gives back that session's
    use and deletes the file once no upload of it is left, bound or not. A client that merely names a path
    (another session's upload, or one it guessed) has no unbound upload to bind and is refused, so it can
    neither read that file nor get it deleted. Files never released (the page keeps its image) are left to
    Gradio's delete_cache.

    Why not delete_cache alone: it deletes cache files by age on a timer, whoever uploaded them, so it can
    neither bind an upload to the session that first used it nor delete it as soon as its request ends.
    """

    _PRUNE_AT = 10_000  # entries; past this, those whose files are gone are dropped

    def __init__(self):
        self._unbound: dict[str, int] = {}
        self._owners: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def claim(self, paths) -> None:
        """Count one more upload of each path, not yet used by any session."""
        with self._lock:
            for path in paths:
                key = _real(path)
                self._unbound[key] = self._unbound.get(key, 0) + 1
            if len(self._unbound) + len(self._owners) > self._PRUNE_AT:
                self._unbound = {k: n for k, n in self._unbound.items() if os.path.exists(k)}
                self._owners = {k: o for k, o in self._owners.items() if os.path.exists(k)}

    def pending(self, path) -> int:
        """Uploads of this path not yet released, bound to a session or not."""
        key = _real(path)
        with self._lock:
            return self._unbound.get(key, 0) + sum(self._owners.get(key, {}).values())

    def admit(self, path, session: str | None, upload_root: str | Path, keep=(), releasing: bool = False) -> str:
        """The real path, if `session` may use `path` now (binding an unbound upload to it), else UploadRefused.

        `releasing`: the caller will `release` this use when done (one upload per use, so two identical files
        in one batch take two uploads). Otherwise (the page, which keeps its image) a session that already
        holds the file takes no further upload, which may be another client's identical one, still unused.
        """
        real = checked_path(path, upload_root, keep)
        if real in {_real(k) for k in keep}:
            return real  # the app's own example files: anyone may use them, nobody deletes them
        session = session or ""
        with self._lock:
            owners = self._owners.get(real, {})
            if self._unbound.get(real, 0) > 0 and (releasing or not owners.get(session)):
                # an upload handed out and not yet used: this session's now
                self._unbound[real] -= 1
                if not self._unbound[real]:
                    del self._unbound[real]
                owners[session] = owners.get(session, 0) + 1
                self._owners[real] = owners
            elif not owners.get(session):
                raise UploadRefused()
        return real

    def release(self, paths, upload_root: str | Path, keep=(), session: str | None = None) -> None:
        """Give back one use of each path, by `session` (None: an upload not yet bound to a session); delete
        (within `upload_root`, not in `keep`) those no upload is left for. Nothing is deleted for a session
        that holds no upload of the path."""
        with self._lock:  # held while deleting, so a claim cannot land between the count and the unlink
            done = []
            for path in paths:
                key = _real(path)
                if session is None:
                    counts, name = self._unbound, key
                else:
                    counts, name = self._owners.get(key, {}), session
                if counts.get(name, 0) <= 0:
                    continue  # not this caller's to give back
                counts[name] -= 1
                if not counts[name]:
                    del counts[name]
                if session is not None and not counts:
                    self._owners.pop(key, None)
                if not self._unbound.get(key) and not self._owners.get(key):
                    done.append(path)
            delete_uploads(done, upload_root, keep)


def delete_uploads(paths: list[str | Path], upload_root: str | Path, keep=()) -> None:
    """Delete uploaded files (and their now empty folders), but only inside `upload_root` and not in `keep`.

    Gradio stores uploads by content hash, in the same folder as its copies of example files: an upload equal
    to an example is the example's file, which must stay (pass those paths as `keep`).
    """
    root = Path(upload_root).resolve()
    kept = {Path(k).resolve() for k in keep}
    for path in paths:
        path = Path(path).resolve()
        if root not in path.parents or path in kept:
            continue
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # gradio keeps each upload in its own folder
        except OSError:
            pass  # not empty, or gone


class UploadClaims:
    """ASGI middleware: counts, in an UploadTracker, the paths the upload route (`path`) hands back.

    The count is taken before the reply is passed on, so no client can start an event with a path not yet
    counted. (Gradio moves the file in place just before replying: a release in that instant can still win.)
    """

    def __init__(self, app, path: str, tracker: UploadTracker):
        self.app, self.path, self.tracker = app, path, tracker

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        status, body = 0, bytearray()

        async def counting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    self._claim(bytes(body))
            await send(message)

        await self.app(scope, receive, counting_send)

    def _claim(self, body: bytes) -> None:
        try:
            paths = json.loads(body)
        except ValueError:
            return
        if isinstance(paths, list):
            self.tracker.claim(p for p in paths if isinstance(p, str))
