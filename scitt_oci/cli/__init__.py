"""The `scitt-oci` command line. Commands translate between files and the library; they hold no domain logic.

Exit codes: 0 success (or "valid"), 1 verification failed, 2 usage error or unreadable input,
3 `serve` could not start (its address is in use or cannot be bound).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import ClassVar, NoReturn

import click

from scitt_oci import __version__
from scitt_oci.errors import ScittOciError

MAX_INPUT_BYTES = 16 << 20
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_NOT_STARTED = 3  # uvicorn's own code for a failed start-up, kept so both paths agree


def _die(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        _die(f"cannot read {what} {path}: {exc.strerror}")
    if len(data) > MAX_INPUT_BYTES:
        _die(f"{what} {path} is larger than {MAX_INPUT_BYTES} bytes")
    return data


def write_private(path: Path, data: bytes, *, force: bool) -> None:
    """Write secret bytes with mode 0600 from the first byte on (never world-readable, even briefly)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        _die(f"{path} exists; pass --force to overwrite it")
    except OSError as exc:
        _die(f"cannot write {path}: {exc.strerror}")
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        _die(f"cannot write {path}: {exc.strerror}")


registry_ca_file = click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True),
    help="With IMAGE: PEM CA certificate(s) for a registry whose TLS certificate a private CA signed.",
)


def usable_ca_file(path: str | None, insecure: bool) -> str | None:
    """`--ca-file` for a registry, checked before any request: a readable PEM bundle, and not with plain HTTP."""
    if path is None:
        return None
    if insecure:
        _die("--ca-file verifies a registry's TLS certificate; --registry-insecure speaks plain HTTP: give one of them")
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError, ValueError) as exc:
        _die(f"--ca-file {path}: not a usable PEM CA certificate bundle ({getattr(exc, 'strerror', None) or exc})")
    return path


def service_error(exc: ScittOciError, url: str) -> str:
    """The text for a failed call to a transparency service, with the fix when the cause is known."""
    text = exc.diagnostics()
    cause, status, title = getattr(exc, "cause", None), getattr(exc, "status", None), getattr(exc, "title", None)
    if cause == "connect":
        hint = (
            "is `scitt-oci serve` running there, on that port? (it listens on 127.0.0.1:8700 unless --listen says "
            "otherwise, and prints its URL when it starts)"
        )
    elif cause == "tls-untrusted":
        hint = "pass --ca-file with the PEM certificate of the CA that signed the service's certificate"
    elif cause == "tls-plain":
        hint = "the service speaks plain HTTP: use " + ("http://" + url.split("://", 1)[1] if "://" in url else url)
    elif cause == "timeout":
        hint = "the service is slow or the address drops packets; check the URL, or raise --timeout"
    elif status == 401:
        hint = (
            "this service needs a registration token: pass --token-file FILE (`scitt-oci serve` makes one in "
            "<data-dir>/registration-token when it listens beyond loopback)"
        )
    elif status == 404 and title is None:
        hint = (
            f"{url} does not answer like a SCITT transparency service (a bare 404, no problem details): "
            "check the URL and the port (`scitt-oci serve` prints its URL when it starts)"
        )
    else:
        return text
    return f"{text}; {hint}"


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or when help lists them all):
    start-up time is part of every `scitt-oci verify` on an admission path."""

    MODULES: ClassVar[dict[str, str]] = {
        "keys": "formats",
        "statement": "formats",
        "verify": "formats",
        "serve": "log",
        "register": "log",
        "log": "log",
        "backfill": "watch",
        "history": "watch",
        "watch": "watch",
        "trust": "watch",
        "mirror": "replication",
        "promote": "promote",
    }

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.MODULES:
            importlib.import_module(f"scitt_oci.cli.{self.MODULES[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in sorted(set(self.MODULES.values())):
            importlib.import_module(f"scitt_oci.cli.{module}")
        return super().list_commands(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="scitt-oci")
def main() -> None:
    """Supply-chain transparency for OCI registries: SCITT statements, receipts and their verification.

    \b
    Make a key, sign a statement about an artifact, inspect it, verify it:
      scitt-oci keys generate --out issuer.pem
      scitt-oci statement create --key issuer.pem --issuer https://wabbit.example \\
          --subject oci://registry.example/net-monitor@sha256:... --digest sha256:... --out s.cose
      scitt-oci statement inspect s.cose
      scitt-oci verify --statement ts.cose --trust policy.yaml

    \b
    Trust a running service (its receipt keys and the issuer its watcher signs as):
      scitt-oci trust pin https://scitt.example --policy policy.yaml

    \b
    Exit codes: 0 success or valid, 1 verification failed (INVALID, REJECT, a refused
    fingerprint, an inconsistent log), 2 usage error, unreadable input or an unreachable
    service or registry, 3 `serve` could not start (its address is in use).
    """


def run() -> None:
    """Console-script entry point: never let a stray exception print a traceback at a user."""
    try:
        main(standalone_mode=True)
    except ScittOciError as exc:  # pragma: no cover - commands catch theirs; this is the last net
        click.echo(f"error: {exc.diagnostics()}", err=True)
        sys.exit(EXIT_USAGE)
