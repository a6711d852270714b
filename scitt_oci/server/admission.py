"""Admission: the Kubernetes validating and mutating webhooks and the Gatekeeper external-data provider.

Each image is decided from what is attached to it in its (configured) registry, within a deadline
under the webhook timeout, with verdicts cached by image digest and policy digest. A review is
bounded (images listed, registry reads made); past a bound, or on any unexpected failure while
deciding, the answer is a denial with its reason, never a 500. Deploy statements are recorded only
from the validating webhook, for reviews whose client authenticated (`ClientAuth`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scitt_oci.errors import BudgetSpent, LimitExceededError, ScittOciError
from scitt_oci.oci.client import RegistryClient
from scitt_oci.oci.reference import Digest, Reference, normalize_registry
from scitt_oci.scitt.reasons import Reason
from scitt_oci.server.bodies import read_limited
from scitt_oci.server.problems import problem_json
from scitt_oci.verify import admission as adm
from scitt_oci.verify.image import ImageVerdict, attached_statements, decide
from scitt_oci.verify.trust import TrustPolicy, load_policy
from scitt_oci.verify.verifier import Finding

log = logging.getLogger("scitt_oci.admission")


class _Budget:
    """Registry reads one review may still make, shared by the threads verifying its images."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def spend(self) -> None:
        with self._lock:
            if self.used >= self.limit:
                raise BudgetSpent(f"the review used its {self.limit} registry reads (admission.max_registry_requests)")
            self.used += 1

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in this thread with its registry requests counted against this budget."""
        _active.budget = self
        try:
            return fn(*args)
        finally:
            _active.budget = None


_active = threading.local()  # the budget of the review a pool thread is working for, if any


def _count_requests(client: RegistryClient) -> None:
    """Count each request `client` makes against the budget of the review the calling thread works for
    (the client is shared: its connections, tokens and capability probes serve every review)."""
    request = client.request

    def budgeted(method: str, path: str, **kw: Any) -> Any:
        budget: _Budget | None = getattr(_active, "budget", None)
        if budget is not None:
            budget.spend()
        return request(method, path, **kw)

    client.request = budgeted  # type: ignore[method-assign]


@dataclass(frozen=True)
class ClientAuth:
    """How admission clients authenticate: a certificate verified against the listener's client CA
    (the TLS handshake verified it; here it only has to be present) or a bearer token."""

    client_ca: bool = False
    tokens: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return self.client_ca or bool(self.tokens)

    def authenticated(self, request: Request) -> bool:
        if self.client_ca:
            tls = request.scope.get("extensions", {}).get("tls") or {}
            if tls.get("client_cert_chain"):
                return True
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and presented.strip():
            given = presented.strip().encode("utf-8", "replace")
            return any(hmac.compare_digest(given, t.encode()) for t in self.tokens)
        return False


@dataclass
class _Cached:
    verdict: ImageVerdict
    expires: float


@dataclass
class Admission:
    policy_path: Path
    clients: dict[str, RegistryClient]
    deadline: float = 2.5
    excluded_namespaces: frozenset[str] = frozenset({"kube-system"})
    positive_ttl: float = 300.0
    negative_ttl: float = 10.0
    registry: CollectorRegistry | None = None
    max_images: int = 256
    max_registry_requests: int = 512
    # Deployment log: called (off the request path) for each admitted image with (ref, namespace, workload),
    # for authenticated reviews of the validating webhook only.
    on_admit: Callable[[Reference, str, str], None] | None = None
    _policy: TrustPolicy | None = None
    _stamp: tuple[tuple[int, int], ...] | None = None
    _cache: OrderedDict[tuple[str, str], _Cached] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(16, thread_name_prefix="scitt-oci-admit")
    )

    def __post_init__(self) -> None:
        for client in self.clients.values():
            _count_requests(client)
        # One spelling per registry, as policy rules match them: `REGISTRY:443`, upper case or a Docker Hub
        # alias in a pod spec finds the configured client instead of falling to "not configured".
        self._by_registry = {normalize_registry(name): client for name, client in self.clients.items()}
        self.decisions = Counter(
            "scitt_admission_decisions", "Admission decisions per image", ["decision", "cached"], registry=self.registry
        )
        self.policy()

    def policy(self) -> TrustPolicy:
        """The trust policy, reloaded when its file or a file it names changes; a new policy empties the cache."""
        stamp = self._stamps()
        if self._policy is None or stamp != self._stamp:
            policy = load_policy(self.policy_path)
            with self._lock:
                if self._policy is None or policy.digest != self._policy.digest:
                    self._cache.clear()
                self._policy = policy
                self._stamp = self._stamps()
        assert self._policy is not None
        return self._policy

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in (self.policy_path, *(self._policy.files if self._policy else ())):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((-1, -1))
        return tuple(out)

    def _verify(self, ref: Reference, policy: TrustPolicy, budget: _Budget) -> ImageVerdict:
        client = self._by_registry.get(normalize_registry(ref.registry))
        if client is None:
            return self._unreachable(ref, policy, f"registry {ref.registry} is not one this service may contact")
        return decide(ref, budget.run(attached_statements, client, ref), policy)

    def _unreachable(
        self, ref: Reference, policy: TrustPolicy, why: str, reason: Reason = Reason.REGISTRY_UNREACHABLE
    ) -> ImageVerdict:
        mode = policy.for_repository(f"{ref.registry}/{ref.repository}").mode
        verdict = ImageVerdict(str(ref), mode == "audit", False, mode, None)
        verdict.reasons.append(Finding(reason, why))
        return verdict

    async def verdict(
        self, ref: Reference, policy: TrustPolicy, deadline: float, budget: _Budget | None = None
    ) -> tuple[ImageVerdict, bool]:
        """(verdict, from cache) for an image with a digest, under the `policy` the request started with;
        registry reads are counted against `budget` (one review's)."""
        key = (str(ref), policy.digest)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit.expires > now:
                return hit.verdict, True
        loop = asyncio.get_running_loop()
        try:
            verdict = await asyncio.wait_for(
                loop.run_in_executor(self._pool, self._verify, ref, policy, budget or self.budget()),
                timeout=max(0.05, deadline - time.monotonic()),
            )
        except TimeoutError:
            return self._unreachable(ref, policy, f"no answer from {ref.registry} within the admission deadline"), False
        except BudgetSpent as exc:
            return self._unreachable(ref, policy, str(exc), Reason.REVIEW_LIMIT), False
        except ScittOciError as exc:
            return self._unreachable(ref, policy, f"{ref.registry}: {exc}"), False
        ttl = self.positive_ttl if verdict.valid else self.negative_ttl
        if not any(f.reason is Reason.REGISTRY_UNREACHABLE for f in verdict.reasons):
            with self._lock:
                self._cache[key] = _Cached(verdict, time.monotonic() + ttl)
                if len(self._cache) > 10_000:
                    self._cache.popitem(last=False)
        return verdict, False

    def budget(self) -> _Budget:
        return _Budget(self.max_registry_requests)

    async def _resolve(self, ref: Reference, deadline: float, budget: _Budget) -> Reference | None:
        client = self._by_registry.get(normalize_registry(ref.registry))
        if client is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(
                loop.run_in_executor(self._pool, budget.run, client.head_manifest, ref.repository, ref.tag or "latest"),
                timeout=max(0.05, deadline - time.monotonic()),
            )
        except (TimeoutError, ScittOciError):
            return None
        return ref.with_digest(Digest.parse(found.digest)) if found else None

    async def review(self, body: bytes, *, mutate: bool, authenticated: bool = False) -> dict[str, Any]:
        """The AdmissionReview answer. A body that is not a review raises (a 400); anything unexpected
        after that is a denial naming it, so a failure never admits through `failurePolicy: Ignore`."""
        review = adm.parse_review(body)
        try:
            return await self._review(review, mutate=mutate, authenticated=authenticated)
        except Exception as exc:
            log.exception("admission of %s/%s failed", review.namespace, review.name)
            self.decisions.labels("deny", "false").inc()
            return adm.response(
                review.uid,
                False,
                f"scitt-oci: {Reason.VERIFIER_ERROR.value}: the review could not be decided ({exc!r})",
            )

    async def _review(self, review: adm.Review, *, mutate: bool, authenticated: bool) -> dict[str, Any]:
        deadline = time.monotonic() + self.deadline
        if review.namespace in self.excluded_namespaces or not review.images:
            return adm.response(review.uid, True)
        if len(review.images) > self.max_images:
            self.decisions.labels("deny", "false").inc()
            return adm.response(
                review.uid,
                False,
                f"scitt-oci: {Reason.REVIEW_LIMIT.value}: the review lists {len(review.images)} images, "
                f"more than the {self.max_images} one review may have (admission.max_images)",
            )
        budget = self.budget()
        denials: list[str] = []
        warnings: list[str] = []
        patch: list[dict[str, Any]] = []
        policy = self.policy()
        admitted: list[Reference] = []

        async def one(use: adm.ImageUse) -> None:
            try:
                await decide_one(use)
            except Exception as exc:  # a verdict that fails is a denial with its reason, never a 500
                log.exception("admission of %s failed", use.image)
                self.decisions.labels("deny", "false").inc()
                denials.append(f"{use.image}: {Reason.VERIFIER_ERROR.value}: could not be decided ({exc!r})")

        async def decide_one(use: adm.ImageUse) -> None:
            try:
                ref = adm.normalise(use.image)
            except ScittOciError as exc:
                denials.append(f"{use.image}: not an image reference ({exc})")
                return
            if ref.digest is None:
                if not mutate:
                    mode = policy.for_repository(f"{ref.registry}/{ref.repository}").mode
                    text = (
                        f"{use.image}: {Reason.TAG_REFERENCE.value}: tags move; reference the image by digest "
                        f"({ref.registry}/{ref.repository}@sha256:...), e.g. from `skopeo inspect`, or enable "
                        "the mutating webhook to pin tags to digests"
                    )
                    (warnings if mode == "audit" else denials).append(text)
                    self.decisions.labels("deny" if mode != "audit" else "audit", "false").inc()
                    return
                resolved = await self._resolve(ref, deadline, budget)
                if resolved is None:
                    denials.append(f"{use.image}: {Reason.REGISTRY_UNREACHABLE.value}: the tag could not be resolved")
                    return
                patch.append(
                    {
                        "op": "replace",
                        "path": use.pointer,
                        "value": f"{ref.registry}/{ref.repository}@{resolved.digest}",
                    }
                )
                ref = resolved
            verdict, cached = await self.verdict(ref, policy, deadline, budget)
            self.decisions.labels(
                "admit" if verdict.valid else ("audit" if verdict.allowed else "deny"), str(cached).lower()
            ).inc()
            if not verdict.valid:
                (warnings if verdict.allowed else denials).append(verdict.summary())
            else:
                admitted.append(ref)

        await asyncio.gather(*(one(u) for u in review.images))
        log.info(
            "admission %s %s/%s %s: %s",
            review.kind,
            review.namespace,
            review.name,
            "denied" if denials else "allowed",
            "; ".join(denials + warnings) or "all images on record",
        )
        if denials:
            return adm.response(review.uid, False, "scitt-oci: " + " | ".join(denials), warnings)
        # Deploys are recorded only when the API server (an authenticated client) asked the validating
        # webhook: the mutating one runs before the final decision and may be reinvoked.
        if admitted and self.on_admit is not None and authenticated and not mutate and not review.dry_run:
            workload = f"{review.kind}/{review.name}" if review.name else review.kind
            for ref in admitted:  # recorded asynchronously: never on the admission path
                self._pool.submit(self._record_deploy, ref, review.namespace, workload)
        return adm.response(review.uid, True, "", warnings, patch if mutate else None)

    def _record_deploy(self, ref: Reference, namespace: str, workload: str) -> None:
        try:
            assert self.on_admit is not None
            self.on_admit(ref, namespace, workload)
        except Exception:  # the deployment log must never affect admission
            log.exception("recording the deployment of %s failed", ref)

    async def gatekeeper(self, body: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.deadline
        keys = adm.parse_provider_request(body)
        if len(keys) > self.max_images:
            raise LimitExceededError(
                f"{Reason.REVIEW_LIMIT.value}: {len(keys)} keys, more than the {self.max_images} one request may "
                "have (admission.max_images)"
            )
        policy = self.policy()
        budget = self.budget()

        async def item(key: str) -> dict[str, Any]:
            try:
                return await item_verdict(key)
            except Exception as exc:  # never a 500: the key gets an error, which Gatekeeper treats as a failure
                log.exception("gatekeeper verdict for %s failed", key)
                return {"key": key, "error": f"{Reason.VERIFIER_ERROR.value}: could not be decided ({exc!r})"}

        async def item_verdict(key: str) -> dict[str, Any]:
            try:
                ref = adm.normalise(key)
            except ScittOciError as exc:
                return {"key": key, "error": f"not an image reference: {exc}"}
            if ref.digest is None:
                return {"key": key, "error": f"{Reason.TAG_REFERENCE.value}: reference the image by digest"}
            verdict, _ = await self.verdict(ref, policy, deadline, budget)
            return {
                "key": key,
                "value": {
                    "allowed": verdict.allowed,
                    "valid": verdict.valid,
                    "reasons": [f.to_json() for f in verdict.reasons],
                },
            }

        return adm.provider_response(list(await asyncio.gather(*(item(k) for k in keys))))


def admission_routes(controller: Admission, auth: ClientAuth | None = None) -> list[Route]:
    """The admission routes. With `auth` configured, a client that does not authenticate is refused (401)
    before its body is read; without it every review is answered, and none is recorded as a deploy."""
    client_auth = auth or ClientAuth()

    async def read(request: Request) -> bytes | Response:
        if client_auth.configured and not client_auth.authenticated(request):
            return problem_json(
                401,
                "Unauthorized",
                "admission clients authenticate with a client certificate signed by admission.client_ca "
                "or a bearer token from admission.token_files",
            )
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return problem_json(415, "Unsupported Media Type", "admission requests are application/json")
        body = await read_limited(request, adm.MAX_REVIEW_BYTES)
        if body is None:
            return problem_json(
                413, "Payload Too Large", f"admission requests may be at most {adm.MAX_REVIEW_BYTES} bytes"
            )
        return body

    def handler(mutate: bool) -> Any:
        async def review(request: Request) -> Response:
            body = await read(request)
            if isinstance(body, Response):
                return body
            authenticated = client_auth.configured  # read() refused every client that did not authenticate
            try:
                return JSONResponse(await controller.review(body, mutate=mutate, authenticated=authenticated))
            except ScittOciError as exc:
                return problem_json(400, "Bad Request", str(exc))

        return review

    async def gatekeeper(request: Request) -> Response:
        body = await read(request)
        if isinstance(body, Response):
            return body
        try:
            return JSONResponse(await controller.gatekeeper(body))
        except ScittOciError as exc:
            return JSONResponse(adm.provider_response([], str(exc)), status_code=400)

    return [
        Route("/admission/validate", handler(False), methods=["POST"]),
        Route("/admission/mutate", handler(True), methods=["POST"]),
        Route("/gatekeeper/verify", gatekeeper, methods=["POST"]),
    ]


def admission_app(routes: list[Route]) -> Starlette:
    """The admission listener's application: the admission routes, /healthz, and problem JSON for the rest."""

    async def healthz(request: Request) -> Response:
        return Response(b"ok\n", media_type="text/plain")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem_json(exc.status_code, "Error", f"{request.method} {request.url.path}: {exc.detail}")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_json(500, "Internal Server Error", "the service failed to answer; see its log")

    return Starlette(
        routes=[*routes, Route("/healthz", healthz, methods=["GET"])],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
