"""The watcher's signature trust, read from the files the configuration names (config `signatures`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cryptography import x509

from scitt_oci.config import SignaturesConfig
from scitt_oci.errors import PolicyError
from scitt_oci.signatures.trust import (
    CosignKey,
    NotationTrustStore,
    SignatureTrust,
    SigstoreIdentity,
    SigstoreTrust,
    TrustedIdentity,
    load_public_key,
)
from scitt_oci.verify.trust import read_file

PUBLIC_GOOD = "public-good"
# The sigstore package ships the public-good instance's trusted root beside its TUF root.
_SHIPPED_ROOT = ("sigstore._store", "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev", "trusted_root.json")


def _certificates(paths: list[Path], where: str) -> tuple[x509.Certificate, ...]:
    out: list[x509.Certificate] = []
    for i, path in enumerate(paths):
        data = read_file(path, f"{where}[{i}]")
        try:
            if b"-----BEGIN" in data:
                out.extend(x509.load_pem_x509_certificates(data))
            else:
                out.append(x509.load_der_x509_certificate(data))
        except ValueError as exc:
            raise PolicyError(f"{where}[{i}]: {path} holds no PEM or DER certificate: {exc}") from None
    return tuple(out)


def public_good_root() -> bytes:
    """The public-good Sigstore trusted root that the installed sigstore package ships."""
    package, folder, name = _SHIPPED_ROOT
    try:
        return resources.files(package).joinpath(folder, name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise PolicyError(
            "signatures.sigstore: trusted_root 'public-good' needs the sigstore package "
            "(pip install 'scitt-oci[sigstore]'), or name a trusted_root.json file"
        ) from None


def load(config: SignaturesConfig) -> SignatureTrust:
    notation = []
    for i, store in enumerate(config.notation):
        where = f"signatures.notation[{i}]"
        if not store.ca and not store.signing_authority:
            raise PolicyError(f"{where}: needs ca or signing_authority roots")
        identities = tuple(TrustedIdentity.parse(t) for t in store.trusted_identities)
        notation.append(
            NotationTrustStore(
                store.name,
                _certificates(store.ca, f"{where}.ca"),
                _certificates(store.signing_authority, f"{where}.signing_authority"),
                identities,
                _certificates(store.tsa, f"{where}.tsa"),
            )
        )
    keys = tuple(
        CosignKey(
            k.name, load_public_key(read_file(k.key, f"signatures.cosign_keys[{i}]"), f"signatures.cosign_keys[{i}]")
        )
        for i, k in enumerate(config.cosign_keys)
    )
    sigstore = []
    for i, entry in enumerate(config.sigstore):
        where = f"signatures.sigstore[{i}]"
        document = (
            public_good_root() if entry.trusted_root == PUBLIC_GOOD else read_file(Path(entry.trusted_root), where)
        )
        expected = tuple(SigstoreIdentity(x.san, x.issuer) for x in entry.identities)
        try:
            sigstore.append(SigstoreTrust.from_trusted_root(entry.name, document, expected))
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}") from None
    return SignatureTrust(tuple(notation), keys, tuple(sigstore))
