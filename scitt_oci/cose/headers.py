"""COSE header labels and CWT claim keys used across scitt-oci (numbers from the IANA registries)."""

from __future__ import annotations

# COSE header parameters (RFC 9052, 9360, 9596, 9597, 9942, 9995)
ALG = 1
CRIT = 2
CONTENT_TYPE = 3
KID = 4
CWT_CLAIMS = 15
TYP = 16
X5BAG = 32
X5CHAIN = 33
X5T = 34
X5U = 35
PAYLOAD_HASH_ALG = 258
PREIMAGE_CONTENT_TYPE = 259
PAYLOAD_LOCATION = 260
RECEIPTS = 394
VDS = 395
VDP = 396

# scitt-oci: the tree size a vds 1 tree head signs, in its protected header (checkpoints, receipts,
# consistency receipts). A text label: it is not in the IANA registry.
TREE_SIZE = "tree_size"

# CWT claims (RFC 8392)
CWT_ISS = 1
CWT_SUB = 2
CWT_AUD = 3
CWT_EXP = 4
CWT_NBF = 5
CWT_IAT = 6
CWT_CTI = 7

# Verifiable data structures and proof types (RFC 9942; CCF profile draft)
VDS_RFC9162_SHA256 = 1
VDS_CCF_LEDGER_SHA256 = 2
VDP_INCLUSION = -1
VDP_CONSISTENCY = -2

# Labels whose meaning we implement, so they may be listed in crit.
UNDERSTOOD = frozenset(
    {
        ALG,
        CRIT,
        CONTENT_TYPE,
        KID,
        CWT_CLAIMS,
        TYP,
        X5CHAIN,
        X5T,
        PAYLOAD_HASH_ALG,
        PREIMAGE_CONTENT_TYPE,
        PAYLOAD_LOCATION,
        RECEIPTS,
        VDS,
        VDP,
    }
)

NAMES: dict[int, str] = {
    ALG: "alg",
    CRIT: "crit",
    CONTENT_TYPE: "content type",
    KID: "kid",
    CWT_CLAIMS: "CWT Claims",
    TYP: "typ",
    X5BAG: "x5bag",
    X5CHAIN: "x5chain",
    X5T: "x5t",
    X5U: "x5u",
    PAYLOAD_HASH_ALG: "payload-hash-alg",
    PREIMAGE_CONTENT_TYPE: "preimage-content-type",
    PAYLOAD_LOCATION: "payload-location",
    RECEIPTS: "receipts",
    VDS: "vds",
    VDP: "vdp",
}
CLAIM_NAMES: dict[int, str] = {
    CWT_ISS: "iss",
    CWT_SUB: "sub",
    CWT_AUD: "aud",
    CWT_EXP: "exp",
    CWT_NBF: "nbf",
    CWT_IAT: "iat",
    CWT_CTI: "cti",
}
