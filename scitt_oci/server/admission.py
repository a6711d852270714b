"""Admission: the Kubernetes validating and mutating webhooks and the Gatekeeper external-data provider.

Each image is decided from what is attached to it in its (configured) registry, within a deadline
under the webhook timeout, with verdicts cached by image digest and policy digest.
"""

from __future__ import annotations

import asyncio
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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scitt_oci.errors import ScittOciError
from scitt_oci.oci.client import RegistryClient
from scitt_oci.oci.reference import Digest, Reference
from scitt_oci.scitt.reasons import Reason
from scitt_oci.server.bodies import read_limited
from scitt_oci.server.problems import problem_json
from scitt_oci.verify import admission as adm
from scitt_oci.verify.image import ImageVerdict, attached_statements, decide
from scitt_oci.verify.trust import TrustPolicy, load_policy
from scitt_oci.verify.verifier import Finding

log = logging.getLogger("scitt_oci.admission")


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
    # Deployment log: called (off the request path) for each admitted image with (ref, namespace, workload).
    on_admit: Callable[[Reference, str, str], None] | None = None
    _policy: TrustPolicy | None = None
    _stamp: tuple[tuple[int, int], ...] | None = None
    _cache: OrderedDict[tuple[str, str], _Cached] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(16, thread_name_prefix="scitt-oci-admit")
    )

    def __post_init__(self) -> None:
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

    def _verify(self, ref: Reference, policy: TrustPolicy) -> ImageVerdict:
        client = self.clients.get(ref.registry)
        if client is None:
            return self._unreachable(ref, policy, f"registry {ref.registry} is not one this service may contact")
        return decide(ref, attached_statements(client, ref), policy)

    def _unreachable(self, ref: Reference, policy: TrustPolicy, why: str) -> ImageVerdict:
        mode = policy.for_repository(f"{ref.registry}/{ref.repository}")[1]
        verdict = ImageVerdict(str(ref), mode == "audit", False, mode, None)
        verdict.reasons.append(Finding(Reason.REGISTRY_UNREACHABLE, why))
        return verdict

    async def verdict(self, ref: Reference, policy: TrustPolicy, deadline: float) -> tuple[ImageVerdict, bool]:
        """(verdict, from cache) for an image with a digest, under the `policy` the request started with."""
        key = (str(ref), policy.digest)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit.expires > now:
                return hit.verdict, True
        loop = asyncio.get_running_loop()
        try:
            verdict = await asyncio.wait_for(
                loop.run_in_executor(self._pool, self._verify, ref, policy),
                timeout=max(0.05, deadline - time.monotonic()),
            )
        except TimeoutError:
            return self._unreachable(ref, policy, f"no answer from {ref.registry} within the admission deadline"), False
        except ScittOciError as exc:
            return self._unreachable(ref, policy, f"{ref.registry}: {exc}"), False
        ttl = self.positive_ttl if verdict.valid else self.negative_ttl
        if not any(f.reason is Reason.REGISTRY_UNREACHABLE for f in verdict.reasons):
            with self._lock:
                self._cache[key] = _Cached(verdict, time.monotonic() + ttl)
                if len(self._cache) > 10_000:
                    self._cache.popitem(last=False)
        return verdict, False

    async def _resolve(self, ref: Reference, deadline: float) -> Reference | None:
        client = self.clients.get(ref.registry)
        if client is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(
                loop.run_in_executor(self._pool, client.head_manifest, ref.repository, ref.tag or "latest"),
                timeout=max(0.05, deadline - time.monotonic()),
            )
        except (TimeoutError, ScittOciError):
            return None
        return ref.with_digest(Digest.parse(found.digest)) if found else None

    async def review(self, body: bytes, *, mutate: bool) -> dict[str, Any]:
        deadline = time.monotonic() + self.deadline
        review = adm.parse_review(body)
        if review.namespace in self.excluded_namespaces or not review.images:
            return adm.response(review.uid, True)
        denials: list[str] = []
        warnings: list[str] = []
        patch: list[dict[str, Any]] = []
        policy = self.policy()
        admitted: list[Reference] = []

        async def one(use: adm.ImageUse) -> None:
            try:
                ref = adm.normalise(use.image)
            except ScittOciError as exc:
                denials.append(f"{use.image}: not an image reference ({exc})")
                return
            if ref.digest is None:
                if not mutate:
                    mode = policy.for_repository(f"{ref.registry}/{ref.repository}")[1]
                    text = (
                        f"{use.image}: {Reason.TAG_REFERENCE.value}: tags move; reference the image by digest "
                        f"({ref.registry}/{ref.repository}@sha256:...), e.g. from `skopeo inspect`, or enable "
                        "the mutating webhook to pin tags to digests"
                    )
                    (warnings if mode == "audit" else denials).append(text)
                    self.decisions.labels("deny" if mode != "audit" else "audit", "false").inc()
                    return
                resolved = await self._resolve(ref, deadline)
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
            verdict, cached = await self.verdict(ref, policy, deadline)
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
        if admitted and self.on_admit is not None and not review.dry_run:
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
        policy = self.policy()

        async def item(key: str) -> dict[str, Any]:
            try:
                ref = adm.normalise(key)
            except ScittOciError as exc:
                return {"key": key, "error": f"not an image reference: {exc}"}
            if ref.digest is None:
                return {"key": key, "error": f"{Reason.TAG_REFERENCE.value}: reference the image by digest"}
            verdict, _ = await self.verdict(ref, policy, deadline)
            return {
                "key": key,
                "value": {
                    "allowed": verdict.allowed,
                    "valid": verdict.valid,
                    "reasons": [f.to_json() for f in verdict.reasons],
                },
            }

        return adm.provider_response(list(await asyncio.gather(*(item(k) for k in keys))))


def admission_routes(controller: Admission) -> list[Route]:
    async def read(request: Request) -> bytes | Response:
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
            try:
                return JSONResponse(await controller.review(body, mutate=mutate))
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
