"""Commands for the registry side: backfill a registry, show an image's history, inspect dead letters."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from scitt_oci.cli import _die, main
from scitt_oci.errors import ScittOciError
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.reference import Reference
from scitt_oci.scitt import profile, transparent
from scitt_oci.scitt import receipt as receipt_mod


def _runtime(config_file: Path | None, data_dir: Path | None, registry: str | None, insecure: bool) -> Any:
    from scitt_oci import config as config_mod

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    if registry is not None:
        overrides["watch"] = {"registries": [{"url": registry, "insecure": insecure}]}
    try:
        from scitt_oci.server import runtime

        return runtime.build(config_mod.load(config_file, overrides=overrides))
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
    """
    registry, _, repo = target.partition("/")
    rt = _runtime(config_file, data_dir, registry, registry_insecure)
    watcher = rt.watcher
    assert watcher is not None
    name = next(iter(watcher.clients)) if len(watcher.clients) == 1 else registry
    client = watcher.clients.get(name)
    if client is None:
        _die(f"registry {registry} is not configured")
    from scitt_oci.watch.reconcile import reattach, unrecorded

    try:
        # One walker of the catalog at a time (replicas' reconciliation loops, other backfills): wait for it.
        with watcher.inbox.exclusive(name, wait=True):
            repositories = [repo] if repo else client.catalog()
            found = []
            with click.progressbar(repositories, label="listing", file=sys.stderr) as bar:
                for r in bar:
                    found += list(unrecorded(watcher.inbox, name, client, [r]))
            queued = watcher.inbox.add(name, found)
    except ScittOciError as exc:
        _die(exc.diagnostics())
    rt.start()
    try:
        with click.progressbar(length=max(queued, 1), label="recording", file=sys.stderr) as recording:
            done = 0
            while True:
                counts = watcher.inbox.counts()
                remaining = counts.get("pending", 0)
                recording.update(max(0, queued - remaining - done))
                done = max(done, queued - remaining)
                if remaining == 0:
                    break
                time.sleep(0.2)  # progress display cadence
        # What is on record but no longer attached (a concurrent writer dropped it from an index): list it again.
        relisted = reattach(watcher.inbox, name, client, settle=0, everything=True)
    except ScittOciError as exc:
        _die(exc.diagnostics())
    finally:
        rt.stop()
    counts = watcher.inbox.counts()
    click.echo(
        f"found {len(found)} manifests not on record; queued {queued}; "
        f"events done {counts.get('done', 0)}, dead {counts.get('dead', 0)}; "
        f"re-attached {relisted} missing referrers"
    )


@main.command("history")
@click.argument("image")
@click.option("--registry-insecure", is_flag=True, help="Plain HTTP to a loopback registry.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def history(image: str, registry_insecure: bool, output: str) -> None:
    """What is on record for IMAGE (registry/repo@digest or :tag): pushes, signatures, deletes, and the receipts.

    Reads the Transparent Statements attached to the image; it does not verify them (use `verify`).
    """
    from scitt_oci.oci.client import RegistryClient, RegistrySettings

    try:
        ref = Reference.parse(image)
        client = RegistryClient(
            RegistrySettings.for_url(("http://" if registry_insecure else "https://") + ref.registry)
        )
        digest = str(ref.digest) if ref.digest else None
        if digest is None:
            found = client.head_manifest(ref.repository, ref.tag or "latest")
            if found is None:
                _die(f"{image} does not exist")
            digest = found.digest
            click.echo(f"warning: {image} is a tag; showing {digest}", err=True)
        records = []
        for d in client.referrers(ref.repository, digest, mf.STATEMENT_ARTIFACT):
            fetched = client.manifest(ref.repository, d.digest)
            if fetched is None:
                continue
            artifact = mf.parse(fetched[0], fetched[1])
            blob = client.blob(ref.repository, artifact.layers[0].digest) if artifact.layers else None
            if blob is None:
                continue
            records.append(_describe(d.digest, blob))
    except ScittOciError as exc:
        _die(exc.diagnostics())
    records.sort(key=lambda r: r.get("iat") or 0)
    if output == "json":
        click.echo(json.dumps({"image": f"{ref.registry}/{ref.repository}@{digest}", "records": records}, indent=2))
        return
    click.echo(f"{ref.registry}/{ref.repository}@{digest}: {len(records)} record(s)")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["iat"])) if r.get("iat") else "?"
        extra = ", ".join(f"{k} {v}" for k, v in r.get("details", {}).items())
        click.echo(f"  {when}  {r.get('kind', '?'):9} by {r.get('issuer')}" + (f" ({extra})" if extra else ""))
        for rc in r.get("receipts", []):
            click.echo(f"      receipt from {rc.get('service')}: leaf {rc.get('leaf_index')} of {rc.get('tree_size')}")


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
    )
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
    from scitt_oci.watch.inbox import Inbox

    cfg = config_mod.load(config_file, overrides={"data_dir": str(data_dir)} if data_dir else None)
    path = cfg.data_dir / "watch.db"
    if not path.exists():
        _die(f"{path} does not exist: no watcher has run with this data directory")
    inbox = Inbox(path)
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
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="COSE Key Set file to write.")
@click.option("--timeout", default=10.0, show_default=True)
def trust_pin(url: str, out: str, timeout: float) -> None:
    """Fetch a transparency service's /.well-known/scitt-keys and write them for a trust policy."""
    from scitt_oci.cli import _write
    from scitt_oci.cose import keys as cose_keys
    from scitt_oci.log.client import ScrapiClient

    try:
        found = ScrapiClient(url, timeout=timeout).keys()
    except ScittOciError as exc:
        _die(exc.diagnostics())
    if not found:
        _die(f"{url} publishes no keys")
    _write(out, cose_keys.dump_cose_key_set(found))
    for k in found:
        click.echo(f"pinned kid {k.kid.hex()} ({k.alg.name if k.alg else 'no alg'})")
    click.echo(f"wrote {len(found)} key(s) to {out}; check the kids with the service's operator once")
