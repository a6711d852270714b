"""`scitt-oci mirror`: keep a verified copy of another service's C2SP tiled log."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from scitt_oci.cli import EXIT_INVALID, _die, _read, main
from scitt_oci.errors import ScittOciError
from scitt_oci.tlog import note
from scitt_oci.tlog import policy as policy_mod


def load_vkey(value: str) -> note.Verifier:
    """A vkey given inline, or the path of a file holding one."""
    text = value
    if "+" not in value or Path(value).is_file():
        text = _read(value, "vkey file").decode("utf-8", errors="replace").strip()
    try:
        return note.parse_vkey(text)
    except ScittOciError as exc:
        _die(f"--vkey: {exc}")


def load_policy(path: Path | None) -> policy_mod.Policy | None:
    """A C2SP tlog-policy file, or a trust policy (YAML) whose service names a `tlog` section."""
    if path is None:
        return None
    text = _read(str(path), "witness policy").decode("utf-8", errors="replace")
    try:
        if "transparency_services" in text:
            import yaml

            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                _die(f"{path}: not valid YAML: {exc}")
            return policy_mod.from_trust_policy(doc)
        return policy_mod.parse(text)
    except ScittOciError as exc:
        _die(f"{path}: {exc}")


@main.command("mirror")
@click.argument("url")
@click.option("--vkey", "vkey_text", required=True, help="The source log's note verifier key (text or a file).")
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the mirror keeps its copy (mirror.db) and fork evidence; `serve --data-dir` serves it.",
)
@click.option("--once", is_flag=True, help="One pass, then exit (default: follow the source).")
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between passes when following.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A C2SP tlog-policy file, or a trust policy naming a `tlog` section: refuse checkpoints below its witness quorum.",
)
@click.option("--ca-file", type=click.Path(dir_okay=False), help="PEM bundle to verify the source's TLS certificate.")
@click.option("--timeout", default=15.0, show_default=True, help="Seconds per HTTP request.")
@click.option(
    "--max-growth",
    default=1 << 20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Entries one pass may fetch and stage; a source further ahead is caught up over several passes.",
)
def mirror(
    url: str,
    vkey_text: str,
    data_dir: Path,
    once: bool,
    interval: float,
    policy_file: Path | None,
    ca_file: str | None,
    timeout: float,
    max_growth: int,
) -> None:
    """Mirror the C2SP tiled log at URL (its base URL, or its /tlog prefix).

    \b
    Each pass verifies the source's checkpoint with --vkey, fetches the new tiles and entry
    bundles, rebuilds the root, checks the tree held is a prefix of the new one, and stores the
    entries in bounded batches, each its own transaction (a killed mirror resumes after the last
    one); the new checkpoint is served only once every entry up to it is stored. A pass stages at
    most --max-growth entries; a source further ahead is caught up over later passes.
    Exit 0 after --once, 1 on a fork (a smaller size, or another history for a size held: both
    checkpoints and the proof are kept under DATA_DIR/evidence/), 2 on errors.
    """
    from scitt_oci.replication.fetch import TlogClient
    from scitt_oci.replication.mirror import ForkDetected, Mirror, MirrorStore

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    vkey = load_vkey(vkey_text)
    policy = load_policy(policy_file)
    try:
        store = MirrorStore(data_dir)
        m = Mirror(store, TlogClient(url, timeout=timeout, ca_file=ca_file), vkey, policy=policy, max_growth=max_growth)
    except (OSError, ScittOciError) as exc:
        _die(str(exc))
    try:
        if once:
            size = m.sync_once()
            click.echo(f"mirrored {size} entries of {vkey.name}")
            return
        stop = threading.Event()

        def stopping(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, stopping)
        signal.signal(signal.SIGINT, stopping)
        click.echo(f"following {url} every {interval:g}s into {data_dir}")
        sys.stdout.flush()
        m.follow(interval, stop)
    except ForkDetected as exc:
        click.echo(f"FORK: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    except ScittOciError as exc:
        _die(exc.diagnostics())
    finally:
        store.close()
