"""`scitt-oci promote`: verify an image's record at the source, copy it with every referrer, counter-register."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from scitt_oci.cli import EXIT_INVALID, _die, main
from scitt_oci.errors import ScittOciError
from scitt_oci.netutil import is_loopback_host
from scitt_oci.oci.reference import Digest, Reference

if TYPE_CHECKING:
    from scitt_oci.cose.keys import CoseKey
    from scitt_oci.promote.countersign import CounterSigner
    from scitt_oci.promote.report import PromotionReport


def _layout(text: str, *, dest: bool) -> tuple[Any, Reference, str]:
    """`oci:DIR[:TAG]` or `oci:DIR@DIGEST`: (store, the reference the policy and the import see, its name)."""
    from scitt_oci.promote.layout import LayoutStore

    rest = text[len("oci:") :]
    tag = digest = None
    if "@" in rest:
        rest, _, digest = rest.rpartition("@")
    else:
        head, slash, last = rest.rpartition("/")
        if ":" in last:
            last, _, tag = last.partition(":")
            rest = head + slash + last
    if not rest:
        _die(f"{text}: name a directory, oci:DIR[:TAG]")
    store = LayoutStore(Path(rest), create=dest)
    if dest:
        if digest is not None:
            _die(f"DEST {text} takes a tag at most, not a digest: the digest is SOURCE's")
        return store, Reference("oci", "layout", tag), f"oci:{rest}" + (f":{tag}" if tag else "")
    if digest is None:
        digest = store.tag_digest(tag) if tag else None
        if digest is None:
            _die(f"SOURCE {text}: name the image by @digest or by a tag the layout holds")
    return store, Reference("oci", "layout", None, Digest.parse(digest)), f"oci:{rest}@{digest}"


def _registry_store(ref: Reference, insecure: bool, ca_file: str | None, timeout: float) -> Any:
    from scitt_oci.oci.client import RegistryClient, RegistrySettings, docker_credentials
    from scitt_oci.promote.store import RegistryStore

    settings = RegistrySettings.for_url(("http://" if insecure else "https://") + ref.registry, timeout=timeout)
    if insecure and not is_loopback_host(settings.name.rsplit(":", 1)[0]):
        _die(f"--registry-insecure is allowed for loopback registries only, not {ref.registry}")
    credentials = docker_credentials(Path.home() / ".docker" / "config.json", ref.registry)
    if credentials or ca_file:
        settings = RegistrySettings(
            settings.name,
            settings.url,
            username=credentials[0] if credentials else None,
            password=credentials[1] if credentials else None,
            ca_file=ca_file,
            timeout=timeout,
        )
    return RegistryStore(RegistryClient(settings), ref.repository)


@main.command("promote")
@click.argument("source")
@click.argument("dest")
@click.option("--trust", "policy_file", required=True, type=click.Path(dir_okay=False), help="Import trust policy.")
@click.option("--ts", "ts_url", help="The consumer's SCRAPI transparency service (http(s)://host[:port]).")
@click.option("--ts-token-file", type=click.Path(dir_okay=False), help="Bearer token for registering at --ts.")
@click.option("--issuer-key", type=click.Path(dir_okay=False), help="The consumer's issuer key (PEM).")
@click.option("--issuer", help="The consumer's issuer identity (iss of the import statement).")
@click.option("--ca-file", type=click.Path(dir_okay=False), help="PEM bundle for the registries' and --ts's TLS.")
@click.option("--registry-insecure", is_flag=True, help="Plain HTTP to loopback registries.")
@click.option("--sync", is_flag=True, help="Also bring referrers added upstream since an earlier promotion.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds for each registry or service call.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def promote(
    source: str,
    dest: str,
    policy_file: str,
    ts_url: str | None,
    ts_token_file: str | None,
    issuer_key: str | None,
    issuer: str | None,
    ca_file: str | None,
    registry_insecure: bool,
    sync: bool,
    timeout: float,
    output: str,
) -> None:
    """Promote SOURCE (registry/repo@digest) to DEST (registry/repo[:tag]) with its whole record.

    Either may be an OCI image layout directory instead, oci:DIR[:TAG] (SOURCE also oci:DIR@digest),
    to carry a verified record across an air gap; into a layout nothing is counter-registered
    (--ts, --issuer-key and --issuer are for a registry DEST, where they are required).

    \b
    1. verifies SOURCE's attached statements against --trust exactly as `verify SOURCE` would;
       on REJECT nothing is copied (exit 1);
    2. copies blobs, the manifest or index with every platform manifest, and every referrer
       (statements, signatures, attestations, SBOMs), digests preserved;
    3. registers each verified upstream Signed Statement at --ts and attaches the Transparent
       Statement carrying both receipts;
    4. attaches an `import` statement signed with --issuer-key naming what was verified;
    5. writes the tag last.

    A second run changes nothing; --sync brings referrers added upstream since.
    Exit 0 when promoted (or already), 1 when the source's record is rejected, 2 on errors.
    """
    from scitt_oci.promote.promote import Promotion
    from scitt_oci.verify.trust import load_policy

    try:
        policy = load_policy(policy_file)
        source_store, source_ref, source_name = _source(source, registry_insecure, ca_file, timeout)
        target = _Target(ts_url, ts_token_file, issuer_key, issuer, ca_file, registry_insecure, timeout)
        dest_store, dest_ref, dest_name, service, key = target.open(dest)
        promotion = Promotion(
            source_store,
            source_ref,
            dest_store,
            dest_ref,
            policy,
            service,
            key,
            issuer,
            sync=sync,
            source_name=source_name,
            dest_name=dest_name,
        )
        report = promotion.run()
    except ScittOciError as exc:
        _die(exc.diagnostics())
    if output == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    elif report.verdict is not None and not report.admitted:
        click.echo(f"REJECT: nothing copied\n  {report.verdict.summary()}")
    else:
        _print_admitted(report, ts_url)
    sys.exit(0 if report.admitted else EXIT_INVALID)


def _source(source: str, insecure: bool, ca_file: str | None, timeout: float) -> tuple[Any, Reference, str]:
    """SOURCE as (store, reference, name): an OCI layout, or a registry image named by digest."""
    if source.startswith("oci:") and not source.startswith("oci://"):
        return _layout(source, dest=False)
    ref = Reference.parse(source)
    if ref.digest is None:
        _die(f"SOURCE {source} must name a digest (registry/repo@sha256:...): tags move, promotion is by digest")
    return _registry_store(ref, insecure, ca_file, timeout), ref, str(ref)


@dataclass(frozen=True)
class _Target:
    """How DEST is reached and, for a registry, the consumer's service and issuer key."""

    ts_url: str | None
    ts_token_file: str | None
    issuer_key: str | None
    issuer: str | None
    ca_file: str | None
    insecure: bool
    timeout: float

    def open(self, dest: str) -> tuple[Any, Reference, str, CounterSigner | None, CoseKey | None]:
        """(store, reference, name, counter-signer or None, issuer key or None) for DEST."""
        if dest.startswith("oci:") and not dest.startswith("oci://"):
            if self.ts_url or self.issuer_key or self.issuer:
                _die(
                    "into an OCI layout nothing is counter-registered: --ts, --issuer-key and --issuer are for a registry DEST"
                )
            store, ref, name = _layout(dest, dest=True)
            return store, ref, name, None, None
        ref = Reference.parse(dest)
        if ref.digest is not None:
            _die(f"DEST {dest} takes a tag at most, not a digest: the digest is SOURCE's")
        if not (self.ts_url and self.issuer_key and self.issuer):
            _die("promoting into a registry needs --ts, --issuer-key and --issuer (the consumer's service and issuer)")
        store = _registry_store(ref, self.insecure, self.ca_file, self.timeout)
        key = self._key(self.issuer_key)
        return store, ref, str(ref), self._counter_signer(self.ts_url), key

    def _key(self, path: str) -> CoseKey:
        from scitt_oci import keyfiles

        key, _ = keyfiles.private_key(Path(path), create_alg=None)
        return key

    def _counter_signer(self, ts_url: str) -> CounterSigner:
        from scitt_oci import keyfiles
        from scitt_oci.promote.countersign import ScrapiCounterSigner
        from scitt_oci.scrapi.client import ScrapiClient

        token = keyfiles.token(Path(self.ts_token_file)) if self.ts_token_file else None
        client = ScrapiClient(ts_url, token=token, timeout=self.timeout, verify_tls=self.ca_file or True)
        return ScrapiCounterSigner.connect(client, ts_url)


def _print_admitted(report: PromotionReport, ts_url: str | None) -> None:
    click.echo(f"ADMIT: {report.source} -> {report.destination}")
    if not report.changed:
        click.echo("  already promoted: nothing to do")
    click.echo(
        f"  copied {report.blobs_copied} blob(s) ({report.blobs_mounted} more mounted), "
        f"{len(report.manifests_copied)} manifest(s), "
        f"{len(report.referrers_copied)} referrer(s), {len(report.tags_copied)} signature tag(s)"
    )
    if ts_url:
        click.echo(f"  counter-registered {len(report.counter_registered)} statement(s) at {ts_url}")
    if report.import_statement:
        click.echo(f"  import statement attached as {report.import_statement}")
    if report.tag_written:
        moved = f" (it named {report.tag_moved_from})" if report.tag_moved_from else ""
        click.echo(f"  tag {report.tag} -> {report.digest}{moved}")
    if report.not_synced:
        click.echo(f"  {report.not_synced} upstream referrer(s) are not here yet; --sync brings them")
