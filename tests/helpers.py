"""Small builders the tests share: keys, certificate chains, an in-memory log that mints receipts, and the
command line run in a process of its own."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scitt_oci.cose import algorithms, keys
from scitt_oci.cose.keys import CoseKey
from scitt_oci.scitt import merkle, receipt
from scitt_oci.scitt.statement import SignedStatement

_KEYS: dict[str, CoseKey] = {}


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m scitt_oci ARGS` as a user runs it, its output captured; env replaces the environment."""
    return subprocess.run(
        [sys.executable, "-m", "scitt_oci", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def key(alg: str = "ES256", slot: int = 0) -> CoseKey:
    """A private key per (alg, slot), generated once per test session (RSA generation is slow)."""
    name = f"{alg}/{slot}"
    if name not in _KEYS:
        _KEYS[name] = keys.generate(algorithms.by_name(alg))
    return _KEYS[name]


def private(k: CoseKey) -> algorithms.PrivateKey:
    """The private half of `k` (every key from `key` has one)."""
    assert k.private is not None
    return k.private


@dataclass
class MemoryLog:
    """Enough of a transparency service to mint real receipts: entries in memory, one signed head per batch."""

    signing_key: CoseKey
    issuer: str = "https://ts.example"
    entries: list[bytes] = field(default_factory=list)
    hash_first: bool = False  # mint under the hash-first entry rule, as some services do
    iat: int | None = 1  # the signed time in each tree head (15/6); None: none, as some vds 1 services mint

    def add(self, statement: SignedStatement) -> int:
        entry = statement.entry()
        self.entries.append(receipt.entry_for_rule(statement, "hash-first" if self.hash_first else "statement", entry))
        return len(self.entries) - 1

    def leaves(self) -> list[bytes]:
        return [merkle.leaf_hash(e) for e in self.entries]

    def head(self, size: int | None = None) -> receipt.SignedTreeHead:
        size = len(self.entries) if size is None else size
        root = merkle.root_of(self.leaves()[:size])
        return receipt.sign_tree_head(
            self.signing_key, issuer=self.issuer, subject="log", tree_size=size, root=root, iat=self.iat
        )

    def receipt(self, index: int, size: int | None = None, sth: receipt.SignedTreeHead | None = None) -> bytes:
        sth = sth or self.head(size)
        path = merkle.inclusion_path(index, sth.tree_size, merkle.list_hasher(self.leaves()))
        return receipt.inclusion_receipt(sth, index, path)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert_chain(
    leaf_key: ec.EllipticCurvePrivateKey, *, days: int = 30, not_before_days: int = -1
) -> tuple[list[x509.Certificate], x509.Certificate]:
    """A leaf (code signing) signed by an intermediate signed by a root; returns ([leaf, intermediate], root)."""
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())

    def build(
        subject: str,
        issuer: str,
        public: ec.EllipticCurvePublicKey,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
        issuer_public: ec.EllipticCurvePublicKey,
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=not_before_days))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
        )
        if ca:
            b = b.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            b = b.add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        return b.sign(signer, hashes.SHA256())

    root = build("Test Root", "Test Root", root_key.public_key(), root_key, True, root_key.public_key())
    inter = build("Test Intermediate", "Test Root", inter_key.public_key(), root_key, True, root_key.public_key())
    leaf = build(
        "Wabbit Networks signing", "Test Intermediate", leaf_key.public_key(), inter_key, False, inter_key.public_key()
    )
    return [leaf, inter], root


def cbor_bomb(size: int, *, sign1: bool = False) -> bytes:
    """Exactly `size` bytes of value-sharing CBOR: `28([29(i-1), 29(i-1)])` for level i, ~9 bytes per level.

    Each level refers twice to the one before, so anything that walks or re-encodes the decoded value
    does 2**levels work. With `sign1`, the bomb is the unprotected header of a tagged COSE_Sign1 shape.
    """

    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        if n < 256:
            return bytes([major << 5 | 24, n])
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")

    def wrap(levels: list[bytes], pad: int) -> bytes:
        items = [head(2, pad) + b"\0" * pad, *levels]
        inner = head(4, len(items)) + b"".join(items)
        if sign1:  # 18([h'', {1: inner}, nil, h''])
            return b"\xd2\x84\x40\xa1\x01" + inner + b"\xf6\x40"
        return inner

    levels = [head(6, 28) + b"\x00"]  # 28(0): the first shared value
    while len(wrap([*levels, b""], 0)) + 9 <= size - 1:
        i = len(levels)
        ref = head(6, 29) + head(0, i - 1)
        levels.append(head(6, 28) + head(4, 2) + ref + ref)
    while len(levels) > 1:
        for pad in range(size - len(wrap(levels, 0)), -1, -1):  # the padding's own head grows with it
            encoded = wrap(levels, pad)
            if len(encoded) == size:
                return encoded
        levels.pop()
    raise ValueError(f"cannot build a bomb of exactly {size} bytes")
