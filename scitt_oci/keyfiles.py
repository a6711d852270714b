"""Key and secret files: made once with mode 0600 (directories 0700), read back, never logged."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography import x509

from scitt_oci.cose import algorithms, keys
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import ConfigError, ScittOciError


def write_secret(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the first byte on; refuse to overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def private_database(path: Path) -> None:
    """Make sure the SQLite database at `path` is readable by its owner only: created 0600 when absent
    (SQLite gives its -wal and -shm files the database's mode), tightened to 0600 when it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        for existing in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                if existing.stat().st_mode & 0o077:
                    existing.chmod(0o600)
            except FileNotFoundError:
                continue


def private_key(path: Path, *, create_alg: str | None = "ES256") -> tuple[CoseKey, bool]:
    """The private key at `path`, generating it first when absent and `create_alg` is given.

    Returns (key, created). A key file readable by group or others is refused.
    """
    if not path.exists():
        if create_alg is None:
            raise ConfigError(f"key file {path} does not exist")
        key = keys.generate(algorithms.by_name(create_alg))
        write_secret(path, key.private_pem())
        return key, True
    mode = path.stat().st_mode & 0o777
    # Group read is allowed for keys mounted from a Kubernetes Secret (defaultMode 0440 with fsGroup);
    # anything open to others, or writable by the group, is refused.
    if mode & 0o027:
        raise ConfigError(f"key file {path} has mode {mode:o}; private keys must not be open to others (chmod 600)")
    try:
        return keys.load_private_pem(path.read_bytes()), False
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    except ScittOciError as exc:
        raise ConfigError(f"key file {path}: {exc}") from None


def token(path: Path, *, create: bool = False) -> str:
    """A bearer token from `path` (first line), generating a random one first when asked."""
    if not path.exists() and create:
        write_secret(path, (secrets.token_urlsafe(32) + "\n").encode())
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from None
    if len(value) < 16:
        raise ConfigError(f"token file {path} holds a token shorter than 16 characters")
    return value


def password(path: Path) -> str:
    """A registry password (or a registry's own token) from `path` (first line): the registry sets its
    rules, so none of ours (a bearer token's 16 characters) apply; only an empty file is refused."""
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read password file {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"password file {path} is empty")
    return value


def public_keys(paths: list[Path]) -> list[CoseKey]:
    out: list[CoseKey] = []
    for p in paths:
        try:
            out.extend(keys.load_key_file(p.read_bytes()))
        except OSError as exc:
            raise ConfigError(f"cannot read key file {p}: {exc.strerror}") from None
        except ScittOciError as exc:
            raise ConfigError(f"key file {p}: {exc}") from None
    return out


def certificates(paths: list[Path]) -> list[x509.Certificate]:
    """Every certificate in PEM files (X.509 roots for issuers' chains)."""
    out: list[x509.Certificate] = []
    for p in paths:
        try:
            out.extend(x509.load_pem_x509_certificates(p.read_bytes()))
        except OSError as exc:
            raise ConfigError(f"cannot read X.509 roots {p}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"{p} holds no PEM certificates: {exc}") from None
    return out
