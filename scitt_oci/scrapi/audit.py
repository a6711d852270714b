"""The log auditor: has a transparency service's log only grown since we last looked?

Each audit reads the service's signed checkpoint (with a witness policy, the witnessed C2SP checkpoint
decides the head) and compares it with the head accepted last time, kept in an `AuditState`:

- first use: the service's keys are pinned (unless the caller gives them) and the head is accepted;
- the same size must have the same root;
- a smaller size signed later (the checkpoints' CWT iat) is a log that shrank (`LOG_SHRANK`); a smaller
  size signed no later is a stale answer (`StaleCheckpoint`, an error): an old signed head stays valid
  for ever, so a replayed or cached one proves nothing against the service;
- a larger size needs a consistency proof from the old head, signed by a pinned key, ending at the
  new head (`INCONSISTENT_LOG` otherwise, whatever is wrong with the proof: one from another size,
  malformed, or not signed by a pinned key).

An inconsistency is what an auditor exists to catch, and worth nothing unless it can be shown to
someone else: the auditor keeps both signed checkpoints, the consistency proof and the keys they
verify with (`Evidence.write`, which never overwrites a file), and the state does not move on.
Everything in the folder verifies offline with `scitt_oci.scitt.receipt` (`read_checkpoint`,
`verify_consistency_receipt`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from scitt_oci.cose import keys as cose_keys
from scitt_oci.cose import sign1
from scitt_oci.cose.cwt import claims_of
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import AuditError as AuditError
from scitt_oci.errors import Refused as Refused
from scitt_oci.errors import ScittOciError
from scitt_oci.errors import StaleCheckpoint as StaleCheckpoint
from scitt_oci.scitt import receipt
from scitt_oci.scitt.reasons import Reason, VerificationFailure
from scitt_oci.tlog import checkpoint as tlog_checkpoint
from scitt_oci.tlog.policy import Policy


class Outcome(StrEnum):
    FIRST = "first"
    CONSISTENT = "consistent"
    INCONSISTENT = "inconsistent"


class LogSource(Protocol):
    """What the auditor reads from a service (the SCRAPI client is one)."""

    def keys(self) -> list[CoseKey]: ...
    def checkpoint(self) -> bytes: ...
    def consistency(self, old_size: int, new_size: int) -> bytes: ...


@dataclass(frozen=True)
class Head:
    """A tree head: its size and root, and the signed bytes that say so: the COSE checkpoint (None in
    states saved before heads were kept) and, when a witness policy chose the head, the C2SP checkpoint."""

    size: int
    root: bytes
    checkpoint: bytes | None = None
    witnessed: bytes | None = None


@dataclass(frozen=True)
class Witnessed:
    """A C2SP checkpoint signed by a log of the witness policy and cosigned to its quorum."""

    size: int
    root: bytes
    note: bytes
    cosigners: tuple[str, ...]


def witnessed(data: bytes, policy: Policy, policy_name: str) -> Witnessed:
    """Verify a service's /tlog/checkpoint under `policy` (Refused when it does not verify or lacks the quorum)."""
    try:
        opened = tlog_checkpoint.open_signed(data, policy.log_keys)
        cosigned = tlog_checkpoint.cosigned_by(opened.note, policy.witness_keys)
    except ScittOciError as exc:
        raise Refused(f"the checkpoint does not verify under {policy_name}: {exc}") from None
    if not policy.satisfied(cosigned):
        names = ", ".join(w.name for w in cosigned) or "no witness"
        raise Refused(
            f"checkpoint of size {opened.checkpoint.size} is below the witness quorum "
            f"({policy.describe()}; cosigned by {names})"
        )
    size, root = opened.checkpoint.size, opened.checkpoint.root
    return Witnessed(size, root, data, tuple(w.name for w in cosigned))


@dataclass(frozen=True)
class AuditState:
    """The last head accepted from one service, and the keys its checkpoints must be signed with."""

    ts: str
    head: Head
    keys: tuple[CoseKey, ...]
    checked_at: str

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ts": self.ts,
            "tree_size": self.head.size,
            "root": self.head.root.hex(),
            "checked_at": self.checked_at,
            "keys": [k.to_jwk() for k in self.keys],
        }
        if self.head.checkpoint is not None:
            doc["checkpoint"] = base64.b64encode(self.head.checkpoint).decode()
        if self.head.witnessed is not None:
            doc["witnessed_checkpoint"] = self.head.witnessed.decode("utf-8")
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AuditState:
        size, root, ts = doc.get("tree_size"), doc.get("root"), doc.get("ts")
        if not isinstance(ts, str) or not isinstance(size, int) or not isinstance(root, str):
            raise AuditError("it needs ts (text), tree_size (integer) and root (hex)")
        try:
            checkpoint = base64.b64decode(doc["checkpoint"], validate=True) if doc.get("checkpoint") else None
            note = doc["witnessed_checkpoint"].encode("utf-8") if doc.get("witnessed_checkpoint") else None
            head = Head(size, bytes.fromhex(root), checkpoint, note)
            pinned = tuple(cose_keys.from_jwk(k) for k in doc.get("keys") or [])
        except (ValueError, TypeError, AttributeError, ScittOciError) as exc:
            raise AuditError(str(exc)) from None
        return cls(ts, head, pinned, str(doc.get("checked_at", "")))


def load_state(path: Path, ts: str) -> AuditState | None:
    """The state kept in `path` for audits of `ts` (None before the first audit)."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AuditError(f"cannot read audit state {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise AuditError(f"cannot read audit state {path}: it is not a JSON object")
    if doc.get("ts") != ts:
        raise AuditError(f"{path} records audits of {doc.get('ts')!r}, not {ts!r}")
    try:
        return AuditState.from_json(doc)
    except AuditError as exc:
        raise AuditError(f"cannot read audit state {path}: {exc}") from None


def save_state(path: Path, state: AuditState) -> None:
    """Replace `path` with `state` in one step (a crash leaves the old state or the new, never half)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise AuditError(f"cannot write the audit state {path}: {exc.strerror or exc}") from None


def evidence_folder(state_file: Path) -> Path:
    """Where an inconsistency found with `state_file` is kept unless told: beside it, named by the UTC time
    to the microsecond (`Evidence.write(..., unique=True)` adds a suffix should that name be taken)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return state_file.with_name(f"{state_file.name}.evidence-{stamp}")


def _claim(folder: Path, unique: bool) -> Path:
    """`folder`, made now or found empty; with `unique`, the first of folder, folder-2, folder-3, ... made
    now. Never a folder holding anything: evidence is never overwritten."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = folder, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            if not unique:
                if candidate.is_dir() and not any(candidate.iterdir()):
                    return candidate
                raise AuditError(
                    f"the evidence folder {folder} is not empty: evidence is never overwritten; "
                    "give another --evidence folder"
                ) from None
            n += 1
            candidate = folder.with_name(f"{folder.name}-{n}")


@dataclass(frozen=True)
class Evidence:
    """Two heads a service signed that no append-only log can have both of, with what shows it."""

    ts: str
    reason: Reason
    message: str
    old: Head
    new: Head
    keys: tuple[CoseKey, ...]
    proof: bytes | None = None
    found_at: str = ""

    def write(self, folder: Path, *, unique: bool = False) -> Path:
        """Write the evidence into `folder` (made if missing, refused if not empty; with `unique`, into a
        fresh folder beside it when it is taken): the signed checkpoints, the proof, the keys and
        evidence.json saying what each file is and how to check it. Returns the folder written; an
        AuditError naming it when it cannot be written."""
        try:
            return self._write(_claim(folder, unique))
        except OSError as exc:
            raise AuditError(f"cannot write the evidence to {folder}: {exc.strerror or exc}") from None

    def _write(self, folder: Path) -> Path:
        files: dict[str, str | None] = {}

        def keep(name: str, data: bytes | None) -> str | None:
            if data is None:
                return None
            with open(folder / name, "xb") as out:  # never over a file already there
                out.write(data)
            return name

        files["keys"] = keep("service-keys.cbor", cose_keys.dump_cose_key_set(self.keys))
        files["proof"] = keep("consistency.cose", self.proof)
        summary: dict[str, Any] = {
            "ts": self.ts,
            "reason": self.reason.value,
            "message": self.message,
            "found_at": self.found_at,
        }
        for which, head in (("old", self.old), ("new", self.new)):
            summary[which] = {
                "tree_size": head.size,
                "root": head.root.hex(),
                "checkpoint": keep(f"{which}-checkpoint.cose", head.checkpoint),
                "witnessed_checkpoint": keep(f"{which}-checkpoint.note", head.witnessed),
            }
        summary["consistency_proof"] = files["proof"]
        summary["service_keys"] = files["keys"]
        summary["check"] = (
            "each *.cose checkpoint verifies with service-keys.cbor (a COSE Key Set) and signs its tree_size; "
            "consistency.cose is a consistency receipt from the old tree_size and root; *.note are C2SP "
            "checkpoints, verified with the witness policy's keys"
        )
        keep("evidence.json", (json.dumps(summary, indent=2) + "\n").encode())
        return folder


@dataclass(frozen=True)
class AuditResult:
    """What an audit found. `state` is what to keep for the next audit (None when inconsistent: the
    last accepted head stays); `evidence` and `evidence_dir` are set when inconsistent."""

    outcome: Outcome
    head: Head
    message: str
    state: AuditState | None
    previous: AuditState | None = None
    pinned: tuple[CoseKey, ...] = ()
    witnessed: Witnessed | None = None
    evidence: Evidence | None = None
    evidence_dir: Path | None = None
    reason: Reason | None = field(default=None)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _read_checkpoint(data: bytes, trusted: Sequence[CoseKey], pinned: bool) -> tuple[int, bytes]:
    try:
        size, root, _key = receipt.read_checkpoint(data, trusted)
    except ScittOciError as exc:
        kid = sign1.decode(data).kid
        if pinned and kid is not None and all(k.kid != kid for k in trusted):
            raise AuditError(
                f"the checkpoint is signed by key {kid.hex()}, which is not pinned in the audit state "
                f"(pinned: {', '.join(k.kid.hex() for k in trusted) or 'none'}): if the service changed its keys, "
                "confirm the new one with its operator and audit with --keys FILE"
            ) from None
        raise exc from None
    return size, root


def _iat(checkpoint: bytes | None) -> int | None:
    """When a checkpoint was signed (its CWT iat), if it says."""
    if checkpoint is None:
        return None
    try:
        claims = claims_of(sign1.decode(checkpoint).protected)
    except ScittOciError:
        return None
    return claims.iat if claims is not None else None


def _when(iat: int | None) -> str:
    if iat is None:
        return "an unknown time (no iat)"
    return dt.datetime.fromtimestamp(iat, dt.UTC).isoformat(timespec="seconds")


def _smaller(old: Head, new: Head) -> VerificationFailure:
    """A smaller signed size: LOG_SHRANK when signed after the old head, else a stale answer (raised)."""
    old_iat, new_iat = _iat(old.checkpoint), _iat(new.checkpoint)
    if old_iat is not None and new_iat is not None and new_iat > old_iat:
        return VerificationFailure(Reason.LOG_SHRANK, f"the log shrank from {old.size} to {new.size} entries")
    if old.checkpoint is None:
        why = "the last accepted head was saved without its checkpoint (a state from an earlier version)"
    else:
        why = f"signed at {_when(new_iat)}, no later than the {old.size} entries signed at {_when(old_iat)}"
    raise StaleCheckpoint(
        f"stale checkpoint: the service answered with {new.size} entries, fewer than the {old.size} accepted last "
        f"time; {why}, and an old signed head stays valid, so this proves nothing (a cache or a replay?): "
        "nothing saved, audit again later"
    )


def _consistency(proof: bytes, old: Head, trusted: Sequence[CoseKey]) -> tuple[int, bytes]:
    """The head a consistency receipt from `old` leads to; any failure is INCONSISTENT_LOG (asked for a
    proof from the old head, the service gave none that holds), saying what was wrong."""
    try:
        size, root, _v = receipt.verify_consistency_receipt(
            proof, old_size=old.size, old_root=old.root, keys=trusted, require_signed_size=True
        )
    except VerificationFailure as exc:
        if exc.reason is Reason.INCONSISTENT_LOG:
            raise
        raise VerificationFailure(
            Reason.INCONSISTENT_LOG, f"no valid consistency proof from {old.size} entries: {exc.message}"
        ) from None
    return size, root


def audit(
    source: LogSource,
    ts: str,
    previous: AuditState | None,
    *,
    keys: Sequence[CoseKey] | None = None,
    witness: Callable[[], Witnessed] | None = None,
    evidence_dir: Path | None = None,
    unique_evidence: bool = False,
    now: Callable[[], str] = _now,
) -> AuditResult:
    """Audit `source` (the service at `ts`) against `previous`. Keys: `keys` when given, else those pinned
    in `previous`, else the service's own (pinned on this first use). `witness` gives the witnessed head
    when a witness policy decides it. Errors reading the service are raised (ScittOciError); what the
    service signed decides the outcome. When inconsistent, the evidence is written to `evidence_dir`
    (never over anything: refused when it is not empty, or with `unique_evidence` a fresh folder beside
    it). A stale answer (a smaller size signed no later than the old head) raises StaleCheckpoint."""
    pinned: tuple[CoseKey, ...] = ()
    if keys is not None:
        trusted = tuple(keys)
    elif previous is not None and previous.keys:
        trusted = previous.keys
    else:
        trusted = pinned = tuple(source.keys())
    signed = source.checkpoint()
    size, root = _read_checkpoint(signed, trusted, pinned=keys is None and not pinned)
    seen = witness() if witness is not None else None
    head = Head(seen.size, seen.root, signed, seen.note) if seen else Head(size, root, signed)
    state = AuditState(ts, head, trusted, now())
    if previous is None:
        text = f"first audit: {head.size} entries, root {head.root.hex()}"
        return AuditResult(Outcome.FIRST, head, text, state, None, pinned, seen)
    old = previous.head
    proof: bytes | None = None
    try:
        if head.size < old.size:
            raise _smaller(old, head)
        if head.size == old.size:
            if head.root != old.root:
                raise VerificationFailure(
                    Reason.INCONSISTENT_LOG, f"size {head.size} now has root {head.root.hex()}, was {old.root.hex()}"
                )
        else:
            proof = source.consistency(old.size, head.size)
            new_size, new_root = _consistency(proof, old, trusted)
            if (new_size, new_root) != (head.size, head.root):
                raise VerificationFailure(
                    Reason.INCONSISTENT_LOG, "the consistency proof ends at another tree head than the checkpoint"
                )
    except VerificationFailure as exc:
        found = Evidence(ts, exc.reason, exc.message, old, head, trusted, proof, now())
        try:
            folder = found.write(evidence_dir, unique=unique_evidence) if evidence_dir is not None else None
        except AuditError as failed:
            raise AuditError(
                f"the log is INCONSISTENT ({exc.reason}: {exc.message}), but {failed}; nothing saved"
            ) from None
        return AuditResult(
            Outcome.INCONSISTENT, head, exc.message, None, previous, pinned, seen, found, folder, exc.reason
        )
    text = f"consistent: {old.size} -> {head.size} entries, root {head.root.hex()}"
    return AuditResult(Outcome.CONSISTENT, head, text, state, previous, pinned, seen)
