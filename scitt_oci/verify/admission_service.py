"""The admission service: decides whether the images of a Kubernetes review (or Gatekeeper keys) are on record.

Each image is decided from what is attached to it in its (configured) registry, within a deadline
under the webhook timeout, with verdicts cached by image digest and policy digest; the trust policy is
reloaded when its file, or a file it names, changes. A review is bounded (images listed, registry reads
made); past a bound, or on any unexpected failure while deciding, the answer is a denial with its
reason, never an error. Deploys are recorded (`on_admit`, off the decision path) only for reviews of
the validating webhook whose client authenticated.

The HTTP face (routes, client authentication, status codes) is `server/admission.py`; the documents
(AdmissionReview, ProviderRequest) are `verify/admission.py`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter

from scitt_oci import outage
from scitt_oci.errors import BudgetSpent, LimitExceededError, ScittOciError, StoreUnavailable
from scitt_oci.oci.attached import attached_statements, pin
from scitt_oci.oci.reference import Reference, normalize_registry
from scitt_oci.oci.registry import RegistryReader
from scitt_oci.scitt.reasons import Reason
from scitt_oci.verify import admission as adm
from scitt_oci.verify.image import ImageVerdict, decide
from scitt_oci.verify.trust import PolicyMode, TrustPolicy, load_policy
from scitt_oci.verify.verifier import Finding

log = logging.getLogger("scitt_oci.admission")

T = TypeVar("T")

MAX_CACHED = 10_000
_READS = ("head_manifest", "referrers", "manifest", "blob")  # counted when a registry has no `request`


class ReviewBudget:
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

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in this thread with its registry requests counted against this budget."""
        _active.budget = self
        try:
            return fn(*args)
        finally:
            _active.budget = None


_active = threading.local()  # the budget of the review a pool thread is working for, if any


def _counted(call: Callable[..., T]) -> Callable[..., T]:
    def budgeted(*args: Any, **kw: Any) -> T:
        budget: ReviewBudget | None = getattr(_active, "budget", None)
        if budget is not None:
            budget.spend()
        return call(*args, **kw)

    return budgeted


def count_reads(client: object) -> None:
    """Count each registry request `client` makes against the budget of the review the calling thread works
    for (the client is shared: its connections, tokens and capability probes serve every review). An HTTP
    client counts every request it sends (tokens, pages, retries); a registry without one, each read."""
    for name in ("request",) if hasattr(client, "request") else _READS:
        call = getattr(client, name)
        if call not in _wrappers:  # a second service over the same client must not count each read twice
            wrapped = _counted(call)
            _wrappers.add(wrapped)
            setattr(client, name, wrapped)


_wrappers: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


@dataclass
class _Cached:
    verdict: ImageVerdict
    expires: float


@dataclass
class ReviewDecision:
    """What the service decided for a review: allowed or not, with the denials, warnings and (for the
    mutating webhook) the patch pinning tags to digests."""

    allowed: bool
    denials: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    patch: list[dict[str, Any]] = field(default_factory=list)
    admitted: list[Reference] = field(default_factory=list)

    @property
    def message(self) -> str:
        return "scitt-oci: " + " | ".join(self.denials) if self.denials else ""


@dataclass
class Admission:
    policy_path: Path
    clients: Mapping[str, RegistryReader]
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
    # Deploy records, one at a time in order, apart from the verifications: one that waits out the
    # database's outage holds no thread admission decisions need.
    _deploys: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="scitt-oci-deploys")
    )
    deploy_patience: float = 120.0  # seconds a deploy record waits for the database before it is given up

    def __post_init__(self) -> None:
        for client in self.clients.values():
            count_reads(client)
        # One spelling per registry, as policy rules match them: `REGISTRY:443`, upper case or a Docker Hub
        # alias in a pod spec finds the configured client instead of falling to "not configured".
        self._by_registry = {normalize_registry(name): client for name, client in self.clients.items()}
        self.decisions = Counter(
            "scitt_admission_decisions", "Admission decisions per image", ["decision", "cached"], registry=self.registry
        )
        self.policy()

    # ----- the trust policy -----
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

    # ----- one image -----
    def budget(self) -> ReviewBudget:
        return ReviewBudget(self.max_registry_requests)

    def client_for(self, ref: Reference) -> RegistryReader | None:
        return self._by_registry.get(normalize_registry(ref.registry))

    def _verify(self, ref: Reference, policy: TrustPolicy, budget: ReviewBudget) -> ImageVerdict:
        client = self.client_for(ref)
        if client is None:
            return self._unreachable(ref, policy, f"registry {ref.registry} is not one this service may contact")
        return decide(ref, budget.run(attached_statements, client, ref), policy)

    def _unreachable(
        self, ref: Reference, policy: TrustPolicy, why: str, reason: Reason = Reason.REGISTRY_UNREACHABLE
    ) -> ImageVerdict:
        mode = policy.for_repository(f"{ref.registry}/{ref.repository}").mode
        verdict = ImageVerdict(str(ref), mode == PolicyMode.AUDIT, False, mode, None)
        verdict.reasons.append(Finding(reason, why))
        return verdict

    async def _in_pool(self, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the service's pool, given until `deadline` (monotonic; at least 50 ms)."""
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(
            loop.run_in_executor(self._pool, fn, *args), timeout=max(0.05, deadline - time.monotonic())
        )

    async def verdict(
        self, ref: Reference, policy: TrustPolicy, deadline: float, budget: ReviewBudget | None = None
    ) -> tuple[ImageVerdict, bool]:
        """(verdict, from cache) for an image with a digest, under the `policy` the request started with;
        registry reads are counted against `budget` (one review's)."""
        key = (str(ref), policy.digest)
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit.expires > time.monotonic():
                return hit.verdict, True
        try:
            verdict = await self._in_pool(deadline, self._verify, ref, policy, budget or self.budget())
        except TimeoutError:
            return self._unreachable(ref, policy, f"no answer from {ref.registry} within the admission deadline"), False
        except BudgetSpent as exc:
            return self._unreachable(ref, policy, str(exc), Reason.REVIEW_LIMIT), False
        except ScittOciError as exc:
            return self._unreachable(ref, policy, f"{ref.registry}: {exc}"), False
        if not any(f.reason is Reason.REGISTRY_UNREACHABLE for f in verdict.reasons):
            ttl = self.positive_ttl if verdict.valid else self.negative_ttl
            with self._lock:
                self._cache[key] = _Cached(verdict, time.monotonic() + ttl)
                if len(self._cache) > MAX_CACHED:
                    self._cache.popitem(last=False)
        return verdict, False

    async def resolve(self, ref: Reference, deadline: float, budget: ReviewBudget) -> Reference | None:
        """`ref` pinned to the digest its tag names now, or None when that cannot be known by the deadline."""
        client = self.client_for(ref)
        if client is None:
            return None
        try:
            return await self._in_pool(deadline, budget.run, pin, client, ref)
        except (TimeoutError, ScittOciError):
            return None

    # ----- a review -----
    async def review(self, body: bytes, *, mutate: bool, authenticated: bool = False) -> dict[str, Any]:
        """The AdmissionReview answer. A body that is not a review raises (MalformedError); anything
        unexpected after that is a denial naming it, so a failure never admits through `failurePolicy: Ignore`."""
        review = adm.parse_review(body)
        try:
            decision = await self.decide(review, mutate=mutate, authenticated=authenticated)
        except Exception as exc:
            log.exception("admission of %s/%s failed", review.namespace, review.name)
            self.decisions.labels("deny", "false").inc()
            return adm.response(
                review.uid,
                False,
                f"scitt-oci: {Reason.VERIFIER_ERROR.value}: the review could not be decided ({exc!r})",
            )
        return adm.response(
            review.uid, decision.allowed, decision.message, decision.warnings, decision.patch if mutate else None
        )

    async def decide(self, review: adm.Review, *, mutate: bool, authenticated: bool = False) -> ReviewDecision:
        """The decision for a parsed review; records the deploys it admits when it should (see `on_admit`)."""
        if review.namespace in self.excluded_namespaces or not review.images:
            return ReviewDecision(True)
        if len(review.images) > self.max_images:
            self.decisions.labels("deny", "false").inc()
            return ReviewDecision(
                False,
                [
                    f"{Reason.REVIEW_LIMIT.value}: the review lists {len(review.images)} images, "
                    f"more than the {self.max_images} one review may have (admission.max_images)"
                ],
            )
        run = _ReviewRun(self, self.policy(), time.monotonic() + self.deadline, self.budget(), mutate)
        await asyncio.gather(*(run.image(u) for u in review.images))
        decision = run.decision
        log.info(
            "admission %s %s/%s %s: %s",
            review.kind,
            review.namespace,
            review.name,
            "allowed" if decision.allowed else "denied",
            "; ".join(decision.denials + decision.warnings) or "all images on record",
        )
        # Deploys are recorded only when the API server (an authenticated client) asked the validating
        # webhook: the mutating one runs before the final decision and may be reinvoked.
        if decision.allowed and authenticated and not mutate and not review.dry_run:
            self._record_deploys(decision.admitted, review)
        return decision

    def _record_deploys(self, admitted: list[Reference], review: adm.Review) -> None:
        if self.on_admit is None:
            return
        workload = f"{review.kind}/{review.name}" if review.name else review.kind
        for ref in admitted:  # recorded asynchronously: never on the admission path
            self._deploys.submit(self._record_deploy, ref, review.namespace, workload)

    def _record_deploy(self, ref: Reference, namespace: str, workload: str) -> None:
        """Store the deploy event; while the database is out of reach (a restart, a failover), retried with
        backoff for up to `deploy_patience` seconds. Nothing here ever affects admission."""
        assert self.on_admit is not None
        on_admit = self.on_admit

        def waiting(exc: StoreUnavailable, tries: int) -> None:
            log.warning("recording the deployment of %s waits for the database: %s", ref, exc)

        try:
            outage.wait_out(
                lambda: on_admit(ref, namespace, workload),
                patience=self.deploy_patience,
                pause=0.25,
                max_pause=10.0,
                waiting=waiting,
            )
        except StoreUnavailable as exc:
            log.error("the deployment of %s was not recorded: %s", ref, exc)
        except Exception:
            log.exception("recording the deployment of %s failed", ref)

    # ----- Gatekeeper -----
    async def gatekeeper(self, body: bytes) -> dict[str, Any]:
        """The ProviderResponse for a ProviderRequest; a request that is not one, or lists too many keys,
        raises (a ScittOciError); a key that cannot be decided gets an error, never the whole response."""
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
                return await self._key_verdict(key, policy, deadline, budget)
            except Exception as exc:  # never a 500: the key gets an error, which Gatekeeper treats as a failure
                log.exception("gatekeeper verdict for %s failed", key)
                return {"key": key, "error": f"{Reason.VERIFIER_ERROR.value}: could not be decided ({exc!r})"}

        return adm.provider_response(list(await asyncio.gather(*(item(k) for k in keys))))

    async def _key_verdict(
        self, key: str, policy: TrustPolicy, deadline: float, budget: ReviewBudget
    ) -> dict[str, Any]:
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


@dataclass
class _ReviewRun:
    """One review's images being decided: under one policy, deadline and registry budget."""

    service: Admission
    policy: TrustPolicy
    deadline: float
    budget: ReviewBudget
    mutate: bool
    decision: ReviewDecision = field(default_factory=lambda: ReviewDecision(True))

    def _deny(self, text: str) -> None:
        self.decision.denials.append(text)
        self.decision.allowed = False

    def _count(self, decision: str, cached: bool = False) -> None:
        self.service.decisions.labels(decision, str(cached).lower()).inc()

    async def image(self, use: adm.ImageUse) -> None:
        try:
            await self._image(use)
        except Exception as exc:  # a verdict that fails is a denial with its reason, never a 500
            log.exception("admission of %s failed", use.image)
            self._count("deny")
            self._deny(f"{use.image}: {Reason.VERIFIER_ERROR.value}: could not be decided ({exc!r})")

    async def _image(self, use: adm.ImageUse) -> None:
        try:
            ref = adm.normalise(use.image)
        except ScittOciError as exc:
            self._deny(f"{use.image}: not an image reference ({exc})")
            return
        if ref.digest is None:
            pinned = await self._pin(use, ref)
            if pinned is None:
                return
            ref = pinned
        verdict, cached = await self.service.verdict(ref, self.policy, self.deadline, self.budget)
        self._count("admit" if verdict.valid else ("audit" if verdict.allowed else "deny"), cached)
        if verdict.valid:
            self.decision.admitted.append(ref)
        elif verdict.allowed:
            self.decision.warnings.append(verdict.summary())
        else:
            self._deny(verdict.summary())

    async def _pin(self, use: adm.ImageUse, ref: Reference) -> Reference | None:
        """A tag: refused by the validating webhook (a warning in audit mode); pinned to its digest by the
        mutating one, with a patch. None when the image is decided here."""
        if not self.mutate:
            mode = self.policy.for_repository(f"{ref.registry}/{ref.repository}").mode
            text = (
                f"{use.image}: {Reason.TAG_REFERENCE.value}: tags move; reference the image by digest "
                f"({ref.registry}/{ref.repository}@sha256:...), e.g. from `skopeo inspect`, or enable "
                "the mutating webhook to pin tags to digests"
            )
            if mode == PolicyMode.AUDIT:
                self.decision.warnings.append(text)
            else:
                self._deny(text)
            self._count("audit" if mode == PolicyMode.AUDIT else "deny")
            return None
        resolved = await self.service.resolve(ref, self.deadline, self.budget)
        if resolved is None:
            self._deny(f"{use.image}: {Reason.REGISTRY_UNREACHABLE.value}: the tag could not be resolved")
            return None
        self.decision.patch.append(
            {"op": "replace", "path": use.pointer, "value": f"{ref.registry}/{ref.repository}@{resolved.digest}"}
        )
        return resolved
