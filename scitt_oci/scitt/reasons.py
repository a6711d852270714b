"""Machine-readable reasons a verification fails, and the error that carries one."""

from __future__ import annotations

from enum import StrEnum

from scitt_oci.errors import VerificationFailure as VerificationFailure  # defined there since #12; kept importable here


class Reason(StrEnum):
    """Why a statement or receipt was rejected. Values are stable: scripts and policies match on them."""

    MALFORMED = "MALFORMED"
    BAD_STATEMENT_SIGNATURE = "BAD_STATEMENT_SIGNATURE"
    UNTRUSTED_ISSUER = "UNTRUSTED_ISSUER"
    SUBJECT_MISMATCH = "SUBJECT_MISMATCH"
    NO_RECEIPTS = "NO_RECEIPTS"
    UNSUPPORTED_VDS = "UNSUPPORTED_VDS"
    UNKNOWN_RECEIPT_KEY = "UNKNOWN_RECEIPT_KEY"
    BAD_RECEIPT_SIGNATURE = "BAD_RECEIPT_SIGNATURE"
    TAMPERED_INCLUSION_PATH = "TAMPERED_INCLUSION_PATH"
    TOO_FEW_RECEIPTS = "TOO_FEW_RECEIPTS"
    # Audits of a log (scitt-oci log audit): two heads the service signed that one append-only log cannot have
    INCONSISTENT_LOG = "INCONSISTENT_LOG"  # no valid consistency proof, or two roots for one size
    LOG_SHRANK = "LOG_SHRANK"  # a signed size smaller than one signed before
    # Decisions about images (scitt-oci verify IMAGE, admission)
    NO_STATEMENTS = "NO_STATEMENTS"
    MISSING_STATEMENT = "MISSING_STATEMENT"
    EXPIRED = "EXPIRED"
    TAG_REFERENCE = "TAG_REFERENCE"
    REGISTRY_UNREACHABLE = "REGISTRY_UNREACHABLE"
    TOO_MANY_REFERRERS = "TOO_MANY_REFERRERS"  # more statement referrers listed than are read: never decided on
    REVIEW_LIMIT = "REVIEW_LIMIT"  # a review past its bound of images or registry reads
    VERIFIER_ERROR = "VERIFIER_ERROR"  # an unexpected failure while deciding: denied, never a 500
