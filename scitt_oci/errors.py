"""The project's error types, all of them: one base class, split by what went wrong and where.

Every parser turns `cbor2`, `cryptography`, `ValueError` and friends into one of these, so a
caller catches `ScittOciError` and nothing else. Messages name the input and the rule it broke.
No error here carries an HTTP status of ours: the faces (the ASGI app, the CLI) choose statuses
and exit codes from the class and its kind. A status an error does carry (`RegistryError`,
`ClientError`) is the far end's answer, part of the input.

The vocabularies some errors carry (`Reason`, `RejectionKind`) live beside the code that decides
them; this module names them for type checking only, so it still imports nothing at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from scitt_oci.log.policy import RejectionKind
    from scitt_oci.scitt.reasons import Reason


class ScittOciError(Exception):
    """Base of every error scitt-oci raises on purpose."""

    def diagnostics(self) -> str:
        """The text the CLI prints for this error."""
        return str(self)


# ----- formats: bytes that are not what they claim, or proofs and signatures that do not hold -----


class MalformedError(ScittOciError):
    """Input bytes that are not what they claim to be (CBOR, COSE, JSON, PEM, ...)."""


class LimitExceededError(MalformedError):
    """Input that breaks a size, depth or item-count limit before it is fully decoded."""


class UnsupportedError(ScittOciError):
    """Well-formed input that uses an algorithm, key type or structure we do not implement."""


class KeyFormatError(MalformedError):
    """A key (PEM, JWK, COSE_Key) that cannot be loaded."""


class SignatureError(ScittOciError):
    """A signature that does not verify under the key given."""


class ProofError(ScittOciError):
    """A Merkle inclusion or consistency proof that does not hold."""


class UntrustedKeyError(SignatureError):
    """A signature made by a key (or certificate) that nothing configured vouches for."""


class UnsupportedChainError(UntrustedKeyError):
    """A chain this validator cannot judge (Ed25519/Ed448 CAs): never trusted, and the reason says why."""


class NoteError(MalformedError):
    """Text that is not a well-formed signed note, vkey or signature line."""


class NoteSignatureError(SignatureError):
    """A note whose signatures do not verify under the keys given."""


class TilePathError(MalformedError):
    """A tile path that the spec does not allow."""


class VerificationFailure(ScittOciError):
    """A check that failed, with its reason code and one sentence saying what was wrong."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def diagnostics(self) -> str:
        return f"{self.reason.value}: {self.message}"


class NotVerified(Exception):  # a verdict, not a fault: deliberately not a ScittOciError
    """Raised inside a signature verifier to stop at the first rule broken; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ----- what the operator gave us: configuration, trust policies -----


class ConfigError(ScittOciError):
    """A configuration (file, SCITT_OCI_* variables, flags, or a file it names: keys, tokens, roots) that
    cannot be used; the message names the setting and the rule it broke."""


class PolicyError(ScittOciError):
    """A trust policy (or the trust material it names) that cannot be used."""


class UnreadableFile(ScittOciError):
    """A named file exists but is not a regular file, is too large or cannot be read (`files.read_regular`);
    the message says why, without the path (its caller names the file and the setting)."""


# ----- the log -----


class Rejection(ScittOciError):
    """A registration refused: its kind (a SCRAPI problem title) and one sentence of detail."""

    def __init__(self, kind: RejectionKind, detail: str) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail

    @property
    def title(self) -> str:
        return self.kind.value


class Overloaded(ScittOciError):
    """Too many registrations are waiting; the client should retry later."""


class ConsistencyError(ScittOciError):
    """A consistency proof was asked for sizes the log cannot prove between."""


class StoreError(ScittOciError):
    """The database cannot be opened, is not a scitt-oci log, or does not hold what it should."""


class StoreUnavailable(StoreError):
    """The database is out of reach for now (restarting, failing over, the connection cut): retry later."""


class TileError(ScittOciError):
    """The stored tiles do not hold a node they should: the store is damaged."""


# ----- registries and other services we call -----


class RegistryError(ScittOciError):
    """A registry refused or failed a request; `status` is its HTTP answer, when it gave one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientRegistryError(RegistryError):
    """The registry is down, slow or overloaded: worth retrying later."""


class BudgetSpent(RegistryError):
    """A review used up its registry reads."""


class ClientError(ScittOciError):
    """The service refused or failed a request; carries its status and problem details, or (no answer)
    the cause: "connect" (nothing listens), "timeout", "tls-untrusted" (certificate not trusted),
    "tls-plain" (the far end speaks plain HTTP), "tls" (another TLS failure)."""

    def __init__(
        self, message: str, status: int | None = None, title: str | None = None, *, cause: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.cause = cause


class FetchError(ScittOciError):
    """The source could not be read, or answered what no tiled log answers."""


class TransportError(OSError):  # an OSError, so that callers catching socket errors catch it too
    """A request that got no usable HTTP answer, for a reason that is not a standard socket/TLS error."""


class DeadlineExceeded(TimeoutError):
    """No complete answer (headers and body) within the request's timeout."""


# ----- the watcher -----


class PermanentError(ScittOciError):
    """An event that cannot succeed however often it is retried."""


class InboxError(ScittOciError):
    """The inbox's database cannot be opened."""


class InboxUnavailable(InboxError, StoreUnavailable):
    """The inbox's database is out of reach for now: the event at hand is not at fault; retry later."""


# ----- promotion and replication -----


class LayoutError(ScittOciError):
    """The layout directory is missing, unreadable or not an OCI image layout."""


class PromotionError(ScittOciError):
    """The promotion could not be carried out (the source, the destination or the service failed)."""


class MirrorError(ScittOciError):
    """The source cannot be mirrored now (unreachable, bad signature, tiles that do not match its own
    checkpoint, below the witness quorum); nothing new was served."""


class ForkDetected(ScittOciError):
    """The source showed a history that does not extend the one held: evidence was kept."""

    def __init__(self, message: str, evidence_dir: Path) -> None:
        super().__init__(f"{message}; evidence in {evidence_dir}")
        self.evidence_dir = evidence_dir


class AuditError(ScittOciError):
    """An audit that could not be carried out (unreadable state, a checkpoint signed by a key not pinned):
    nothing is proved either way."""


class StaleCheckpoint(AuditError):
    """The service answered with a head older than the one an audit accepted last time (a smaller size
    signed no later): a cached or replayed answer, not evidence against the service. Nothing is saved."""


class Refused(ScittOciError):
    """The witnessed checkpoint does not verify under the witness policy, or is below its quorum."""


class NotAccepted(ScittOciError):
    """The log could not store the statement (its commit failed or took too long); retry later."""
