"""Commands for the registry side: backfill a registry, show an image's history, inspect dead letters."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from scitt_oci import outage
from scitt_oci.cli import EXIT_INVALID, _die, _write, main, registry_ca_file, usable_ca_file
from scitt_oci.errors import ScittOciError, StoreUnavailable
from scitt_oci.oci.reference import Reference
from scitt_oci.scitt import profile, transparent
from scitt_oci.scitt import receipt as receipt_mod

if TYPE_CHECKING:
    from scitt_oci.cose.keys import CoseKey
    from scitt_oci.scrapi.client import PublishedIssuer
    from scitt_oci.watch.events import RegistryEvent

T = TypeVar("T")


def _split_target(target: str) -> tuple[str, str]:
    """REGISTRY[/REPO] or http(s)://REGISTRY[/REPO] -> (registry as written, with any scheme; repository or "")."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        scheme, rest = "", target
    registry, _, repo = rest.partition("/")
    return (f"{scheme}://{registry}" if scheme else registry), repo.strip("/")


def _backfill_runtime(
    config_file: Path | None, data_dir: Path | None, registry: str, insecure: bool
) -> tuple[Any, str]:
    """The runtime, and the name of the registry to walk: the configured entry for it when there is one
    (its `insecure`, credentials and CA as configured), else one made from the command line, by the same
    rule `serve` and `verify` follow."""
    from scitt_oci import config as config_mod
    from scitt_oci.netutil import registry_url
    from scitt_oci.oci.client import RegistrySettings

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    try:
        cfg = config_mod.load(config_file, overrides=overrides)

        def name_of(url: str, insecure: bool) -> str:
            return RegistrySettings.for_url(registry_url(url, insecure=insecure)).name

        configured = {name_of(r.url, r.insecure) for r in cfg.watch.registries}
        scheme_given = "://" in registry
        wanted = RegistrySettings.for_url(registry if scheme_given else f"https://{registry}").name
        if wanted not in configured:
            name_of(registry, insecure)  # the loopback and --registry-insecure rules, before anything starts
            added = config_mod.RegistryConfig.model_validate({"url": registry, "insecure": insecure})
            cfg = cfg.model_copy(
                update={"watch": cfg.watch.model_copy(update={"registries": [*cfg.watch.registries, added]})}
            )
        from scitt_oci import runtime

        return runtime.build(cfg), wanted
    except ScittOciError as exc:
        _die(exc.diagnostics())


_common = [
    click.option(
        "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Service configuration."
    ),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="The service's data directory."),
    click.option("--registry-insecure", is_flag=True, help="Plain HTTP to a loopback registry."),
]


def common(f: Any) -> Any:
    for option in reversed(_common):
        f = option(f)
    return f


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """`text` with each control character (CR, LF, ESC...) shown as an escape, for one line of output."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


@main.command("backfill")
@click.argument("target")
@common
def backfill(target: str, config_file: Path | None, data_dir: Path | None, registry_insecure: bool) -> None:
    """Record everything already in REGISTRY[/REPO]: every tagged manifest and signature not yet on record.

    Resumable: what is on record is skipped, so an interrupted backfill picks up where it stopped.
    Runs with the data directory of `scitt-oci serve` (it may be running: they share the log safely).
    An image that cannot be read or repaired (its referrers index tag taken over by another manifest,
    say) does not stop the rest: each is named at the end, and the exit code is then 1.
    """
    registry, repo = _split_target(target)
    rt, name = _backfill_runtime(config_file, data_dir, registry, registry_insecure)
    watcher = rt.watcher
    assert watcher is not None
    client = watcher.clients[name]
    from scitt_oci.watch.reconcile import Unrepaired, dead_deletions, not_recorded, reattach, unrecorded

    def listing() -> tuple[list[RegistryEvent], int, list[Unrepaired]]:
        # One walker of the catalog at a time (replicas' reconciliation loops, other backfills): wait for it.
        unread: list[Unrepaired] = []
        with watcher.inbox.exclusive(name, wait=True):
            repositories = [repo] if repo else client.catalog()
            found = []
            with click.progressbar(repositories, label="listing", file=sys.stderr) as bar:
                for r in bar:
                    found += list(unrecorded(watcher.inbox, name, client, [r], unread))
            queued = watcher.inbox.add(name, found, revive=True)  # dead letters among them are queued again
        return found, queued, unread

    def checking() -> tuple[int, list[Unrepaired], int]:
        # What is on record but no longer attached (a concurrent writer dropped it from an index): list it again.
        unrepaired: list[Unrepaired] = []
        relisted = reattach(watcher.inbox, name, client, settle=0, everything=True, failed=unrepaired)
        unrepaired += not_recorded(watcher.inbox, name, found)
        return relisted, unrepaired, dead_deletions(watcher.inbox, name)

    try:
        found, queued, failed = _patiently(listing)
    except ScittOciError as exc:
        _die(exc.diagnostics())
    rt.start()
    try:
        with click.progressbar(length=max(queued, 1), label="recording", file=sys.stderr) as recording:
            done = 0
            while True:
                remaining = _patiently(lambda: watcher.inbox.counts().get("pending", 0))
                recording.update(max(0, queued - remaining - done))
                done = max(done, queued - remaining)
                if remaining == 0:
                    break
                time.sleep(0.2)  # progress display cadence
        relisted, unrepaired, deletions = _patiently(checking)
        failed += unrepaired
    except ScittOciError as exc:
        _die(exc.diagnostics())
    finally:
        rt.stop()
    click.echo(
        f"found {len(found)} manifests not on record; queued {queued}; "
        f"recorded {len(found) - len(failed)}; re-attached {relisted} missing referrers"
    )
    for f in failed:
        click.echo(f"not repaired: {_printable(f.image)}: {_printable(f.why)}", err=True)
    if deletions:
        click.echo(
            f"note: {deletions} deletion event(s) are dead-lettered; backfill records what the registry holds, "
            "not what it deleted: `scitt-oci watch dead-letters` lists them, and --retry queues them again",
            err=True,
        )
    if failed:
        click.echo(f"error: {len(failed)} image(s) could not be read or repaired (named above)", err=True)
        sys.exit(EXIT_INVALID)


OUTAGE_PATIENCE = 120.0  # seconds backfill waits for its database to come back before it gives up
OUTAGE_PAUSE = 1.0  # seconds between looks meanwhile


def _patiently(step: Callable[[], T]) -> T:
    """`step()`, waiting out a database out of reach (a restart, a failover) as the workers do, for up to
    OUTAGE_PATIENCE seconds, then stopping (StoreUnavailable). Every step is idempotent, and a backfill
    run again once the database is back picks up where this one stopped."""

    def waiting(exc: StoreUnavailable, tries: int) -> None:
        if tries == 1:
            click.echo(f"warning: {exc}; waiting for it to come back", err=True)

    try:
        return outage.wait_out(step, patience=OUTAGE_PATIENCE, pause=OUTAGE_PAUSE, waiting=waiting)
    except StoreUnavailable as exc:
        raise type(exc)(f"{exc}; run backfill again when it is back") from None


@main.command("history")
@click.argument("image")
@click.option("--registry-insecure", is_flag=True, help="Plain HTTP to a loopback registry.")
@registry_ca_file
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def history(image: str, registry_insecure: bool, ca_file: str | None, output: str) -> None:
    """What is on record for IMAGE (registry/repo@digest or :tag): pushes, signatures, deletes, and the receipts.

    Reads the Transparent Statements attached to the image; it does not verify them (use `verify`).
    When more statement referrers are listed than are read, shows those read, says so, and exits 1.
    """
    from scitt_oci.netutil import registry_url
    from scitt_oci.oci.attached import pin, statement_referrers, truncation_note
    from scitt_oci.oci.client import RegistryClient, RegistrySettings

    try:
        ref = Reference.parse(image)
        settings = RegistrySettings.for_url(
            registry_url(ref.registry, insecure=registry_insecure), ca_file=usable_ca_file(ca_file, registry_insecure)
        )
        client = RegistryClient(settings)
        pinned = pin(client, ref)
        if pinned is None:
            _die(f"{image} does not exist")
        digest = str(pinned.digest)
        if ref.digest is None:
            click.echo(f"warning: {image} is a tag; showing {digest}", err=True)
        found = statement_referrers(client, ref.repository, digest)
    except ScittOciError as exc:
        _die(exc.diagnostics())
    records = [_describe(a.referrer, a.statement) for a in found]
    records.sort(key=lambda r: r.get("iat") or 0)
    note = f"TRUNCATED: {truncation_note(found.listed)}" if found.truncated else None
    if output == "json":
        doc: dict[str, Any] = {"image": f"{ref.registry}/{ref.repository}@{digest}", "records": records}
        doc |= {"truncated": found.truncated, "listed": found.listed}
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"{ref.registry}/{ref.repository}@{digest}: {len(records)} record(s)")
        for r in records:
            for line in _record_lines(r):
                click.echo(line)
        if note:
            click.echo(f"  {note}")
    if note:
        click.echo(f"error: {image}: the listing was truncated: {note}", err=True)
        sys.exit(EXIT_INVALID)


def _record_lines(r: dict[str, Any]) -> list[str]:
    """One record of `history`, as text; an unreadable one says why (anything a pusher wrote is escaped)."""
    if "error" in r:
        return [f"  ?                    unreadable record {r['referrer']}: {_printable(r['error'])}"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["iat"])) if r.get("iat") else "?"
    extra = _details_text(r.get("details", {}))
    lines = [f"  {when}  {r.get('kind', '?'):11} by {r.get('issuer')}" + (f" ({extra})" if extra else "")]
    for rc in r.get("receipts", []):
        lines.append(f"      receipt from {rc.get('service')}: leaf {rc.get('leaf_index')} of {rc.get('tree_size')}")
    return lines


def _details_text(details: dict[str, Any]) -> str:
    """A signature's verification first (verified: signer, anchor; or NOT verified: reason), then the rest."""
    if "verified" not in details:
        return ", ".join(f"{k} {v}" for k, v in details.items())
    rest = {k: v for k, v in details.items() if k not in ("verified", "signer", "anchor", "reason", "note")}
    if details["verified"] is True:
        head = f"verified: signer {details.get('signer')}, trust anchor {details.get('anchor')}"
    else:
        head = f"NOT verified: {details.get('note') or details.get('reason')}"
    return "; ".join([head, ", ".join(f"{k} {v}" for k, v in rest.items())])


def _describe(referrer: str, blob: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"referrer": referrer}
    try:
        ts = transparent.parse(blob)
        event = profile.read_event(ts.statement)
    except ScittOciError as exc:
        return {**out, "error": exc.diagnostics()}
    claims = ts.statement.claims
    out.update(
        kind=event.kind.value,
        issuer=ts.statement.issuer,
        iat=claims.iat if claims else None,
        recorded=str(event.recorded_digest),
        details=dict(event.details),
        profile_version=event.version,
    )
    if event.kind in profile.SIGNED_KINDS and event.version < 2:
        out["details"]["verified"] = False
        out["details"]["note"] = "profile v1: the signer is the pusher's claim; nothing verified it"
    receipts = []
    for raw in ts.receipts:
        try:
            receipts.append(receipt_mod.describe(raw))
        except ScittOciError as exc:
            receipts.append({"error": f"unreadable receipt: {exc}"})
    out["receipts"] = receipts
    return out


@main.group("watch")
def watch_group() -> None:
    """The registry watcher's inbox."""


@watch_group.command("dead-letters")
@common
@click.option("--retry", is_flag=True, help="Put every dead-lettered event back in the queue.")
def dead_letters(config_file: Path | None, data_dir: Path | None, registry_insecure: bool, retry: bool) -> None:
    """List events that failed too often to be processed (with the reason), or retry them."""
    from scitt_oci import config as config_mod
    from scitt_oci.runtime import open_inbox

    try:
        cfg = config_mod.load(config_file, overrides={"data_dir": str(data_dir)} if data_dir else None)
        path = cfg.data_dir / "watch.db"
        if cfg.storage.backend == "sqlite" and not path.exists():
            _die(f"{path} does not exist: no watcher has run with this data directory")
        inbox = open_inbox(cfg)  # the one `serve` opens: on PostgreSQL, the one every replica shares
    except ScittOciError as exc:
        _die(exc.diagnostics())
    if retry:
        click.echo(f"{inbox.retry_dead()} event(s) queued again")
        return
    dead = inbox.dead()
    for d in dead:
        # Stored before tags were validated, an event may hold anything: never print control characters raw.
        click.echo(
            _printable(
                f"#{d.id} {d.registry}/{d.event.repository}@{d.event.digest or d.event.tag} {d.event.action}: "
                f"{d.attempts} attempts; {d.reason}"
            )
        )
    click.echo(f"{len(dead)} dead-lettered event(s)")


@main.group("trust")
def trust_group() -> None:
    """Trust material for policies."""


@trust_group.command("pin")
@click.argument("url")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trust policy to write, or to add this service to: its receipt keys, its issuers and their iss.",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the bare receipt keys (COSE Key Set) here.")
@click.option("--name", help="The service's name in the policy (default: from the URL's host and port).")
@click.option(
    "--expect-fingerprint",
    "expected",
    multiple=True,
    help="Refuse unless every key pinned has one of these fingerprints (hex, as `scitt-oci serve` prints; repeatable).",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True),
    help="PEM CA certificate(s) for a service whose certificate a private CA signed.",
)
@click.option("--timeout", default=10.0, show_default=True)
def trust_pin(
    url: str,
    policy_file: Path | None,
    out: str | None,
    name: str | None,
    expected: tuple[str, ...],
    ca_file: str | None,
    timeout: float,
) -> None:
    """Trust a transparency service: fetch its receipt keys (/.well-known/scitt-keys) and the issuers its
    watcher signs as (/.well-known/scitt-oci/issuers), print their fingerprints, and write them.

    \b
    With --policy the file becomes (or gains) a complete trust policy: the service under
    transparency_services and its issuers, with their iss, under issuers; the keys go to files beside
    it (NAME.ts-keys.cbor, NAME.issuer-keys.cbor), merged with keys pinned before. Compare the
    fingerprints with the service's operator once (`scitt-oci serve` prints them as kids), or give
    them with --expect-fingerprint: a key not expected is refused and nothing is written (exit 1).
    """
    from urllib.parse import urlsplit

    from scitt_oci.cose import keys as cose_keys
    from scitt_oci.verify import pin

    if policy_file is None and out is None:
        _die("give --policy FILE (a trust policy) or --out FILE (the bare receipt keys), or both")
    try:
        wanted = [pin.parse_fingerprint(e) for e in expected]
    except ScittOciError as exc:
        _die(exc.diagnostics())
    found, issuers = _fetch_published(url, timeout, ca_file, with_issuers=policy_file is not None)
    for k in found:
        click.echo(f"receipt key  {pin.fingerprint(k)}  ({k.alg.name if k.alg else 'no alg'})")
    for i in issuers:
        for k in i.keys:
            click.echo(f"issuer key   {pin.fingerprint(k)}  ({k.alg.name if k.alg else 'no alg'}) for iss {i.iss}")
    if wanted:
        _refuse_unexpected([*found, *(k for i in issuers for k in i.keys)], wanted)
    if out is not None:
        _write(out, cose_keys.dump_cose_key_set(found))
        click.echo(f"wrote {len(found)} receipt key(s) to {out}")
    if policy_file is not None:
        service = name or pin.slug(urlsplit(url).netloc)
        _write_policy(policy_file, service, found, issuers)
    if not wanted:
        click.echo("compare these fingerprints with the service's operator once (`scitt-oci serve` prints them)")
        from scitt_oci.netutil import is_loopback_host

        if url.startswith("http://") and not is_loopback_host(urlsplit(url).hostname or ""):
            click.echo("warning: fetched over plain HTTP, which anyone on the path can change: compare them", err=True)


def _fetch_published(
    url: str, timeout: float, ca_file: str | None, *, with_issuers: bool
) -> tuple[list[CoseKey], list[PublishedIssuer]]:
    """The service's receipt keys and (with_issuers) the issuers it publishes; exit 2 when it cannot say."""
    from scitt_oci.cli import service_error
    from scitt_oci.scrapi.client import ClientError, ScrapiClient

    issuers: list[PublishedIssuer] = []
    try:
        client = ScrapiClient(url, timeout=timeout, verify_tls=ca_file or True)
        found = client.keys()
        if with_issuers:
            try:
                issuers = client.issuers()
            except ClientError as exc:
                if exc.status != 404:
                    raise
                click.echo(f"warning: {url} publishes no issuers (not a scitt-oci service?): trust its issuers by hand")
    except ScittOciError as exc:
        _die(service_error(exc, url))
    if not found:
        _die(f"{url} publishes no receipt keys")
    return found, issuers


def _refuse_unexpected(pinned: list[CoseKey], wanted: list[str]) -> None:
    """Exit 1, writing nothing, unless every key has an expected fingerprint and every fingerprint a key."""
    from scitt_oci.cli import EXIT_INVALID
    from scitt_oci.verify import pin

    stray, unmatched = pin.unexpected(pinned, wanted)
    if stray or unmatched:
        for k in stray:
            click.echo(f"error: key {pin.fingerprint(k)} is not among the expected fingerprints", err=True)
        for f in unmatched:
            click.echo(f"error: no key has the expected fingerprint {f}", err=True)
        click.echo("nothing written", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"every key matches an expected fingerprint ({len(wanted)} given)")


def _write_policy(policy_file: Path, service: str, found: list[Any], issuers: list[Any]) -> None:
    import yaml

    from scitt_oci.cose import keys as cose_keys
    from scitt_oci.verify import pin
    from scitt_oci.verify.trust import load_policy

    folder = policy_file.parent
    doc: dict[str, Any] | None = None
    if policy_file.exists():
        try:
            loaded = yaml.safe_load(policy_file.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            _die(f"cannot add to {policy_file}: {exc}")
        if loaded is not None and not isinstance(loaded, dict):
            _die(f"cannot add to {policy_file}: it is not a mapping (a trust policy)")
        doc = loaded

    def merged(file_name: str, fetched: list[Any]) -> None:
        path = folder / file_name
        existing = []
        if path.exists():
            try:
                existing = cose_keys.load_key_file(path.read_bytes())
            except (OSError, ScittOciError) as exc:
                _die(f"cannot add to {path}: {exc}")
        result = pin.merge_keys(existing, fetched)
        _write(str(path), cose_keys.dump_cose_key_set(result.keys))
        kept = len(result.keys) - len(result.added)
        click.echo(f"  {file_name}: {len(result.added)} key(s) added" + (f", {kept} kept" if kept else ""))

    try:
        service_file = f"{service}.ts-keys.cbor"
        pins = []
        for n, published in enumerate(issuers):
            issuer_name = service if len(issuers) == 1 else f"{service}-{n + 1}"
            pins.append(pin.IssuerPin(issuer_name, f"{issuer_name}.issuer-keys.cbor", published.iss))
        new_doc = pin.merge_policy(doc, service, service_file, pins)
    except ScittOciError as exc:
        _die(f"cannot add to {policy_file}: {exc.diagnostics()}")
    if doc is not None and doc.get("issuers") is None and pins:
        click.echo(
            f"note: {policy_file} named no issuers (any issuer whose statement carries its certificate); "
            "from now on only the issuers it lists are trusted"
        )
    merged(service_file, found)
    for p, published in zip(pins, issuers, strict=True):
        merged(p.key_file, list(published.keys))
    tmp = policy_file.with_name(policy_file.name + ".tmp")
    _write(str(tmp), yaml.safe_dump(new_doc, sort_keys=False).encode())
    try:
        load_policy(tmp)
    except ScittOciError as exc:
        tmp.unlink(missing_ok=True)
        _die(f"the policy would not load, so {policy_file} is left as it was: {exc.diagnostics()}")
    tmp.replace(policy_file)
    click.echo(
        f"wrote {policy_file}: service {service!r}"
        + (f" and issuer(s) {', '.join(repr(p.iss) for p in pins)}" if pins else " (no issuers)")
    )
