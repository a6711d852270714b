"""An OCI distribution client for one configured registry: manifests and blobs by digest (every byte
checked), push by digest, the referrers API with the tag-schema fallback, catalog and tags.

Why not `oras`: it has no referrers API or fallback, always pushes to a tag (`latest` when none is
given), cannot push an index, and retries for about two minutes. This client has timeouts on every
call, a bounded number of retries with jitter, and contacts only its registry (and token realms on
the same host or explicitly allowed).

`settings.timeout` bounds each call from connecting to the last body byte (not each socket read: a
registry that trickles a body cannot hold a caller). A call that runs out of time is not retried
here: it raises `TransientRegistryError` at once, so a watcher worker gives the event back to the
inbox (retried later, with backoff) instead of spending its next attempts on the same slow
registry. `deadline` (a `time.monotonic()` instant) bounds every call of the client together.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from scitt_oci import jsonin
from scitt_oci.errors import MalformedError
from scitt_oci.errors import RegistryError as RegistryError  # defined there since #12; kept importable here
from scitt_oci.errors import (
    TransientRegistryError as TransientRegistryError,  # defined there since #12; kept importable here
)
from scitt_oci.lru import LruCache
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.http import Backoff, DeadlineExceeded, HttpError, Response, Session, TransportError, ascii_int
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Digest

MAX_BLOB_BYTES = 16 * 1024 * 1024
ACCEPT_MANIFESTS = ", ".join(mf.MANIFEST_TYPES)


@dataclass(frozen=True)
class RegistrySettings:
    name: str  # host[:port], as image references name it
    url: str  # http(s)://host[:port]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout: float = 10.0
    attempts: int = 4
    auth_hosts: tuple[str, ...] = ()  # token realms elsewhere than the registry's own host

    @classmethod
    def for_url(cls, url: str, **kw: Any) -> RegistrySettings:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MalformedError(f"registry {url!r} must be host[:port] or http(s)://host[:port]")
        return cls(name=parts.netloc, url=f"{parts.scheme}://{parts.netloc}", **kw)


def docker_credentials(config_path: Path, registry: str) -> tuple[str, str] | None:
    """Username and password for `registry` from a docker config.json `auths` entry, if any."""
    try:
        doc = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    entry = (doc.get("auths") or {}).get(registry) or (doc.get("auths") or {}).get(f"https://{registry}")
    if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
        return None
    try:
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if user else None


def _no_answer(method: str, url: str, exc: BaseException) -> TransientRegistryError:
    """A request that got no HTTP answer, said with its cause and the usual fix."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransientRegistryError(
            f"the TLS certificate of {origin} is not trusted ({getattr(exc, 'verify_message', text)}): "
            "give the CA that signed it (--ca-file FILE for verify and history; ca_file of the registry "
            "in a configuration for serve and backfill)"
        )
    if isinstance(exc, ssl.SSLError):
        if any(w in text for w in ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long")):
            return TransientRegistryError(
                f"{origin} does not speak TLS (it answers plain HTTP): for a loopback registry pass "
                "--registry-insecure (insecure: true in a configuration)"
            )
        return TransientRegistryError(f"TLS with {origin} failed: {text[:200]}")
    if isinstance(exc, TransportError):  # e.g. the proxy refused or is down: its own words
        return TransientRegistryError(f"{method} {url}: {text[:300]}")
    if isinstance(exc, socket.gaierror):
        return TransientRegistryError(
            f"{method} {url}: cannot resolve {urlsplit(url).hostname} ({exc.strerror}): check the name, or "
            "HTTPS_PROXY / NO_PROXY if the registry is reached through a proxy"
        )
    if isinstance(exc, ConnectionRefusedError):
        return TransientRegistryError(f"{method} {url}: connection refused: is the registry running on that port?")
    return TransientRegistryError(f"{method} {url}: {type(exc).__name__}")


_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


BLOB_UNKNOWN_ATTEMPTS = 3  # a manifest PUT answered MANIFEST_BLOB_UNKNOWN is tried this often


class RegistryClient:
    def __init__(
        self,
        settings: RegistrySettings,
        *,
        session: Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        deadline: float | None = None,
    ) -> None:
        self.settings = settings
        self.deadline = deadline  # time.monotonic() by which every call must be done; None: each call alone
        self._verify: bool | str = settings.ca_file or True
        self._session = session or Session(verify=self._verify)
        self._session.headers["User-Agent"] = "scitt-oci"
        self._tokens: dict[str, str] = {}
        self._basic: str | None = None  # set once the registry asked for Basic credentials
        self._sleep = sleep
        self.referrers_api: bool | None = None  # capability cache: None until probed
        # Per-subject locks, with how many callers hold or wait for each; dropped when none does.
        self._subject_locks: dict[tuple[str, str], tuple[threading.Lock, list[int]]] = {}
        self._known_blobs: set[tuple[str, str]] = set()  # (repo, digest) seen in the registry: no HEAD again
        self._locks_guard = threading.Lock()
        # Entries seen in each subject's fallback index, kept so that one lost to a concurrent writer is put back.
        self._seen_entries: LruCache[tuple[str, str], dict[str, dict[str, Any]]] = LruCache(4096)
        self.converge_rounds = 8
        # Referrers and fallback indexes this client wrote: their push events need no read.
        self._own: LruCache[tuple[str, str], bool] = LruCache(8192)
        self.counts: Counter[str] = Counter()  # requests by method and kind of path, e.g. "GET manifests/<digest>"
        self.settle_seconds = (0.05, 0.25)  # the jittered pause before a confirming read of a shared index

    # ----- plumbing -----
    def _url(self, path: str) -> str:
        url = urljoin(self.settings.url + "/", path.lstrip("/")) if not path.startswith("http") else path
        if urlsplit(url).netloc != urlsplit(self.settings.url).netloc:
            raise RegistryError(f"refusing to contact {urlsplit(url).netloc}: only {self.settings.name} is configured")
        if urlsplit(url).scheme != urlsplit(self.settings.url).scheme:  # e.g. an http:// upload Location
            raise RegistryError(f"refusing {urlsplit(url).scheme}:// for {self.settings.url}: no scheme downgrade")
        return url

    def _token(self, challenge: str, scope_hint: str) -> str | None:
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.get("realm")
        if not realm:
            return None
        parts = urlsplit(realm)
        host = parts.netloc
        if parts.scheme not in ("http", "https") or not host:
            raise RegistryError(f"the registry's token realm {realm[:200]!a} is not an absolute http(s) URL")
        if urlsplit(self.settings.url).scheme == "https" and parts.scheme != "https":
            # The password (and the token) would cross the network in clear text.
            raise RegistryError(
                f"the registry's token realm {realm[:200]!a} is plain HTTP; an HTTPS registry's credentials "
                "go to HTTPS token services only"
            )
        if host != urlsplit(self.settings.url).netloc and host not in self.settings.auth_hosts:
            raise RegistryError(f"the registry's token service {host} is not an allowed auth host")
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope_hint)}
        auth = (self.settings.username, self.settings.password or "") if self.settings.username else None
        try:
            r = self._session.get(realm, params=query, auth=auth, timeout=self._timeout(f"token service {host}"))
        except DeadlineExceeded as exc:
            raise TransientRegistryError(f"token service {host}: {exc}") from None
        except HttpError as exc:
            raise TransientRegistryError(f"token service {host}: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise RegistryError(f"token service {host} answered {r.status_code}", r.status_code)
        try:
            body = r.json()
        except MalformedError as exc:
            raise RegistryError(f"token service {host}: {exc}") from None
        token = body.get("token") or body.get("access_token")
        return token if isinstance(token, str) else None

    def _timeout(self, what: str) -> float:
        """The time the next call may take: `settings.timeout`, or less when the client's deadline is nearer."""
        if self.deadline is None:
            return self.settings.timeout
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TransientRegistryError(f"{what}: the time allowed for the whole operation has passed")
        return min(self.settings.timeout, remaining)

    def _pause(self, seconds: float) -> None:
        if self.deadline is not None:
            seconds = min(seconds, max(0.0, self.deadline - time.monotonic()))
        self._sleep(seconds)

    def request(self, method: str, path: str, *, scope: str = "", ok: tuple[int, ...] = (200,), **kw: Any) -> Response:
        """One call with auth, timeouts and bounded jittered retries; raises on anything not in `ok` (and not 404)."""
        url = self._url(path)
        headers = dict(kw.pop("headers", {}))
        with self._locks_guard:
            self.counts[f"{method} {_path_kind(urlsplit(url).path)}"] += 1
        backoff = Backoff()
        for attempt in range(1, self.settings.attempts + 1):
            last = attempt == self.settings.attempts
            self._authorize(headers, scope)
            r = self._send(method, url, headers, last, kw)
            if r is None:  # no answer, worth another attempt
                self._pause(backoff.next())
                continue
            if r.status_code == 401 and not last and self._answer_challenge(r, scope):
                continue
            if r.status_code in ok or r.status_code == 404:
                return r
            busy = r.status_code >= 500 or r.status_code == 429
            if busy and not last:
                self._pause(backoff.next(r.headers.get("retry-after")))
                continue
            error = TransientRegistryError if busy else RegistryError
            raise error(f"{method} {url}: HTTP {r.status_code} {r.text[:200]!r}", r.status_code)
        raise TransientRegistryError(f"{method} {url}: no answer after {self.settings.attempts} attempts")

    def _authorize(self, headers: dict[str, str], scope: str) -> None:
        """Credentials go out only after the registry asked for them (a challenge), never unprompted."""
        if self._basic is not None:
            headers["Authorization"] = self._basic
        elif scope in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"

    def _send(self, method: str, url: str, headers: dict[str, str], last: bool, kw: dict[str, Any]) -> Response | None:
        """One attempt: the response, or None when there was no answer and another attempt may follow."""
        try:
            return self._session.request(method, url, headers=headers, timeout=self._timeout(f"{method} {url}"), **kw)
        except DeadlineExceeded as exc:  # slow, not down: retrying now would only hold the caller longer
            raise TransientRegistryError(f"{method} {exc}") from None
        except HttpError as exc:
            if last or isinstance(exc, ssl.SSLError):
                raise _no_answer(method, url, exc) from None
            return None

    def _answer_challenge(self, r: Response, scope: str) -> bool:
        """Take up a 401's challenge (a Bearer token for `scope`, or Basic credentials once); True when the
        request is worth sending again with them."""
        challenge = r.headers.get("www-authenticate", "")
        if challenge.lower().startswith("bearer"):
            token = self._token(challenge, scope)
            if token:
                self._tokens[scope] = token
                return True
        elif challenge.lower().startswith("basic") and self.settings.username and self._basic is None:
            raw = f"{self.settings.username}:{self.settings.password or ''}".encode()
            self._basic = "Basic " + base64.b64encode(raw).decode()
            return True
        return False

    # ----- reading -----
    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        """(bytes, media type, digest) of a manifest by digest or tag; None when absent. Digests are checked."""
        r = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=f"repository:{repo}:pull",
            headers={"Accept": ACCEPT_MANIFESTS},
            stream=True,
        )
        if r.status_code == 404:
            return None
        data = _read_limited(r, mf.MAX_MANIFEST_BYTES)
        digest = mf.digest_of(data)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"{repo}@{reference}: the registry sent bytes whose digest is {digest}")
        if reference.startswith("sha512:"):
            expected = Digest.parse(reference)
            if hashlib.sha512(data).hexdigest() != expected.hex:
                raise RegistryError(f"{repo}@{reference}: the registry sent other bytes")
            digest = reference
        media_type = r.headers.get("content-type", "").split(";")[0].strip()
        return data, media_type, digest

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        r = self.request(
            "HEAD",
            f"/v2/{repo}/manifests/{reference}",
            scope=f"repository:{repo}:pull",
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        if r.status_code == 404:
            return None
        digest = r.headers.get("docker-content-digest")
        size = _content_length(r)
        if not digest or size is None:
            fetched = self.manifest(repo, reference)
            if fetched is None:
                return None
            data, media_type, digest = fetched
            return Descriptor(media_type, digest, len(data))
        return Descriptor(r.headers.get("content-type", "").split(";")[0].strip(), digest, size)

    def blob(self, repo: str, digest: str, limit: int = MAX_BLOB_BYTES) -> bytes | None:
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull", stream=True)
        if r.status_code == 404:
            return None
        data = _read_limited(r, limit)
        if mf.digest_of(data) != digest:
            raise RegistryError(f"{repo} blob {digest}: the registry sent other bytes")
        return data

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Referrers of `digest`: the referrers API when the registry has it, else the tag-schema index."""
        if self.referrers_api is not False:
            found = self._referrers_api(repo, digest, artifact_type)
            if found is not None:
                return found
        return [
            d
            for d in self._fallback_index(repo, digest)[1]
            if artifact_type is None or d.artifact_type == artifact_type
        ]

    def _referrers_api(self, repo: str, digest: str, artifact_type: str | None) -> list[Descriptor] | None:
        # quote: "+" in a media type would otherwise arrive as a space
        path = f"/v2/{repo}/referrers/{digest}" + (
            f"?artifactType={quote(artifact_type, safe='')}" if artifact_type else ""
        )
        out: list[Descriptor] = []
        pages = 0
        while path and pages < 50:
            pages += 1
            r = self.request("GET", path, scope=f"repository:{repo}:pull", headers={"Accept": mf.OCI_INDEX})
            if r.status_code == 404:
                self.referrers_api = False
                return None
            self.referrers_api = True
            index = mf.parse(_read_limited(r, mf.MAX_MANIFEST_BYTES), mf.OCI_INDEX)
            filtered = "artifactType" in r.headers.get("oci-filters-applied", "")
            out += [d for d in index.manifests if filtered or artifact_type is None or d.artifact_type == artifact_type]
            path = _next_link(r.headers.get("link", ""))
        return out

    def _fallback_index(self, repo: str, digest: str) -> tuple[dict[str, Any] | None, list[Descriptor]]:
        fetched = self.manifest(repo, mf.fallback_tag(digest))
        if fetched is None:
            return None, []
        data, media_type, _ = fetched
        parsed = mf.parse(data, media_type)
        if not parsed.is_index:
            raise RegistryError(
                f"{repo}:{mf.fallback_tag(digest)} is a {parsed.media_type}, not a referrers index; not trusted"
            )
        return jsonin.load_object(data, "referrers index", mf.MAX_MANIFEST_BYTES), list(parsed.manifests)

    def catalog(self) -> list[str]:
        return self._paged("/v2/_catalog?n=1000", "repositories", "registry:catalog:*")

    def tags(self, repo: str) -> list[str]:
        return self._paged(f"/v2/{repo}/tags/list?n=1000", "tags", f"repository:{repo}:pull")

    def _paged(self, path: str, key: str, scope: str) -> list[str]:
        out: list[str] = []
        pages = 0
        while path and pages < 1000:
            pages += 1
            r = self.request("GET", path, scope=scope)
            if r.status_code == 404:
                return out
            try:
                items = r.json().get(key) or []
            except MalformedError as exc:
                raise RegistryError(f"{path}: {exc}") from None
            out += [i for i in items if isinstance(i, str)]
            path = _next_link(r.headers.get("link", ""))
        return out

    # ----- writing -----
    def push_blob(self, repo: str, data: bytes, *, check_exists: bool = True) -> str:
        """Upload a blob unless the registry has it (`check_exists=False` skips the HEAD for content
        known to be new, such as a freshly made statement)."""
        digest = mf.digest_of(data)
        scope = f"repository:{repo}:pull,push"
        if (repo, digest) in self._known_blobs:
            return digest
        if check_exists and self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope).status_code == 200:
            self._known_blobs.add((repo, digest))
            return digest
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,))
        location = r.headers.get("location")
        if r.status_code != 202 or not location:
            raise RegistryError(f"{repo}: blob upload did not start (HTTP {r.status_code})")
        sep = "&" if "?" in location else "?"
        put = self.request(
            "PUT",
            f"{location}{sep}digest={digest}",
            scope=scope,
            ok=(201,),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if put.status_code != 201:
            raise RegistryError(f"{repo}: blob upload failed (HTTP {put.status_code})")
        if len(data) < 1024:  # small shared blobs (the empty config) recur; remember them
            self._known_blobs.add((repo, digest))
        return digest

    def push_manifest(
        self, repo: str, data: bytes, media_type: str, reference: str | None = None
    ) -> tuple[str, str | None]:
        """PUT a manifest by digest (or to `reference`, only ever a fallback tag); returns (digest, OCI-Subject)."""
        digest = mf.digest_of(data)
        backoff = Backoff()
        for attempt in range(1, BLOB_UNKNOWN_ATTEMPTS + 1):
            try:
                r = self.request(
                    "PUT",
                    f"/v2/{repo}/manifests/{reference or digest}",
                    scope=f"repository:{repo}:pull,push",
                    ok=(201,),
                    data=data,
                    headers={"Content-Type": media_type},
                )
                break
            except RegistryError as exc:
                # Distribution links a blob into a repository by rewriting a small file; while another
                # writer (a watcher attaching beside us) links the same blob, the manifest's check can
                # read it empty and answer MANIFEST_BLOB_UNKNOWN for a blob that is there. Try again.
                if exc.status != 400 or "MANIFEST_BLOB_UNKNOWN" not in str(exc) or attempt == BLOB_UNKNOWN_ATTEMPTS:
                    raise
                self._pause(backoff.next())
        if r.status_code != 201:
            raise RegistryError(f"{repo}: manifest push failed (HTTP {r.status_code})", r.status_code)
        return digest, r.headers.get("oci-subject")

    def pushed_here(self, repo: str, digest: str) -> bool:
        """Whether this client wrote the manifest `digest` to `repo` as a referrer or a referrers index
        (recently: the last 8192)."""
        return self._own.get((repo, digest)) is not None

    @contextlib.contextmanager
    def _lock(self, repo: str, digest: str) -> Iterator[None]:
        """Hold the lock of one subject's index; it lives while someone holds or waits for it (a watcher
        that runs for months sees millions of subjects)."""
        key = (repo, digest)
        with self._locks_guard:
            lock, users = self._subject_locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._locks_guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._subject_locks[key]

    def attach(
        self, repo: str, subject: Descriptor, artifact: bytes, layers: list[bytes], *, also: Sequence[Descriptor] = ()
    ) -> str:
        """Push a referrer manifest and its blobs by digest; maintain the fallback index when the registry
        does not process `subject` (with `also`: other referrers of `subject` known to exist, such as the
        signature a statement is about). Idempotent: attaching the same artifact again changes nothing."""
        self.push_blob(repo, mf.EMPTY_BLOB)
        for blob in layers:
            self.push_blob(repo, blob, check_exists=False)  # a re-upload of existing content is harmless
        digest, oci_subject = self.push_manifest(repo, artifact, mf.OCI_MANIFEST)
        self._own.put((repo, digest), True)
        if oci_subject:
            self.referrers_api = True
            return digest
        parsed = mf.parse(artifact, mf.OCI_MANIFEST)
        entry = Descriptor(mf.OCI_MANIFEST, digest, len(artifact), parsed.effective_artifact_type, parsed.annotations)
        self.list_referrers(repo, subject.digest, [entry, *also])
        return digest

    def referrer_entry(self, repo: str, digest: str, subject: str) -> Descriptor | None:
        """The index entry for the manifest `digest` if it exists and is a referrer of `subject`, else None."""
        fetched = self.manifest(repo, digest)
        if fetched is None:
            return None
        data, media_type, _ = fetched
        return mf.referrer_entry(data, media_type, digest, subject)

    def list_referrers(self, repo: str, subject: str, wanted: Sequence[Descriptor]) -> None:
        """Make the tag-schema index of `subject` list every descriptor of `wanted`, without dropping any
        entry another writer put there.

        Registries such as Distribution 2.8 ignore `If-Match`, so a read-modify-write can lose to a
        concurrent writer (Notation, ORAS, another replica) that read before us and writes after us.
        Hence: merge what the index holds now with every entry seen in it before (this call and earlier
        ones: an entry that vanished is put back while its manifest exists), write, and, when others
        share the index, read again after a jittered pause (past the read-to-write window of a writer
        that started before us) until our entries and every entry seen are present.

        An index that held nothing but what we add (a new image's) is written once, with no confirming
        read: no other writer was seen on it, and a read right after the write would only catch one
        whose write landed within that round trip (one request in seven per image, to close a window
        of milliseconds). What a writer drops later, here or after a confirming read, is put back by
        our next write to the same index (it merges every entry seen) and by the reconciliation of
        attachments."""
        need = {d.digest: d.to_json() for d in wanted}
        tag = mf.fallback_tag(subject)
        with self._lock(repo, subject):
            seen = self._seen_entries.get((repo, subject)) or {}
            seen = dict(seen)
            gone: set[str] = set()
            wrote = contended = False
            for _ in range(self.converge_rounds):
                if wrote and contended:
                    self._sleep(random.uniform(*self.settle_seconds))  # noqa: S311 - jitter
                doc, _listed = self._fallback_index(repo, subject)
                doc = doc or mf.empty_index()
                current = [e for e in doc.get("manifests") or [] if isinstance(e, dict)]
                present = {str(e.get("digest")) for e in current}
                if any(d not in need for d in present) or any(d not in present for d in seen if d not in gone):
                    contended = True  # the index is shared, or an entry we saw was dropped by someone
                for e in current:
                    seen.setdefault(str(e.get("digest")), e)
                missing = [need[d] for d in need if d not in present]
                for d, e in seen.items():
                    if d in present or d in need or d in gone:
                        continue
                    if self.head_manifest(repo, d) is None:
                        gone.add(d)  # its manifest was deleted: a removal, not a lost write
                    else:
                        missing.append(e)
                if not missing:
                    self._seen_entries.put((repo, subject), {d: e for d, e in seen.items() if d not in gone})
                    return
                doc["manifests"] = current + missing
                written, _ = self.push_manifest(repo, mf.canonical_json(doc), mf.OCI_INDEX, tag)
                self._own.put((repo, written), True)
                wrote = True
                if not contended:  # no one else seen on this index: written once (see above)
                    seen.update((str(e.get("digest")), e) for e in missing)
                    self._seen_entries.put((repo, subject), {d: e for d, e in seen.items() if d not in gone})
                    return
        raise TransientRegistryError(f"{repo}:{tag} kept changing under us; will retry")


_KINDS = (
    (re.compile(r"^/v2/.+/manifests/sha(256|512)-[0-9a-f]+$"), "manifests/<fallback-tag>"),
    (re.compile(r"^/v2/.+/manifests/sha(256|512):[0-9a-f]+$"), "manifests/<digest>"),
    (re.compile(r"^/v2/.+/manifests/[^/]+$"), "manifests/<tag>"),
    (re.compile(r"^/v2/.+/blobs/uploads/.*$"), "blobs/uploads"),
    (re.compile(r"^/v2/.+/blobs/[^/]+$"), "blobs/<digest>"),
    (re.compile(r"^/v2/.+/referrers/[^/]+$"), "referrers/<digest>"),
    (re.compile(r"^/v2/.+/tags/list$"), "tags/list"),
    (re.compile(r"^/v2/_catalog$"), "_catalog"),
)


def _path_kind(path: str) -> str:
    """The kind of a registry path, for request counts (repository names and digests left out)."""
    for pattern, kind in _KINDS:
        if pattern.match(path):
            return kind
    return "other"


def _content_length(r: Response) -> int | None:
    """The declared body size; a Content-Length that is not ASCII digits is a named error."""
    declared = r.headers.get("content-length")
    if declared is None:
        return None
    size = ascii_int(declared)
    if size is None:
        raise RegistryError(f"{r.url}: the registry's Content-Length {declared[:40]!a} is not a number")
    return size


def _read_limited(r: Response, limit: int) -> bytes:
    declared = _content_length(r)
    if declared is not None and declared > limit:
        raise RegistryError(f"{r.url}: {declared} bytes is more than the {limit} read")
    chunks, size = [], 0
    try:
        for chunk in r.iter_content(65536):
            size += len(chunk)
            if size > limit:
                raise RegistryError(f"{r.url}: more than {limit} bytes")
            chunks.append(chunk)
    except DeadlineExceeded as exc:
        raise TransientRegistryError(f"GET {exc}") from None
    except HttpError as exc:  # the body broke off: the registry is failing, not lying
        raise TransientRegistryError(f"GET {r.url}: the body broke off ({type(exc).__name__})") from None
    return b"".join(chunks)


def _next_link(header: str) -> str:
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', header)
    return match.group(1) if match else ""
