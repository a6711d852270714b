"""Composition of replication from the configuration: the C2SP read API of the service's own log, the
witness and the witness client (the composition root's replication part)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from starlette.routing import BaseRoute

from scitt_oci import keyfiles
from scitt_oci.config import Config
from scitt_oci.errors import ConfigError, ScittOciError
from scitt_oci.log.service import TransparencyService
from scitt_oci.log.tiled import TiledLog
from scitt_oci.replication.cosigning import CosignatureStore, WitnessClient, parse_peer_key
from scitt_oci.replication.witness import Witness
from scitt_oci.server.tlog_routes import tlog_routes, witness_routes
from scitt_oci.tlog import checkpoint, note, tiles


def ed25519_key(path: Path, *, create: bool) -> ed25519.Ed25519PrivateKey:
    key, _ = keyfiles.private_key(path, create_alg="EdDSA" if create else None)
    if not isinstance(key.private, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"key file {path} must hold an Ed25519 private key (note and witness keys are Ed25519)")
    return key.private


def default_origin(config: Config) -> str:
    base = config.identity or config.url
    origin = base.split("://", 1)[-1].rstrip("/") + "/tlog"
    return origin


@dataclass
class Replication:
    routes: list[BaseRoute] = field(default_factory=list)
    tiled: TiledLog | None = None
    witness: Witness | None = None
    witness_client: WitnessClient | None = None

    def start(self) -> None:
        if self.witness_client:
            self.witness_client.start()

    def stop(self) -> None:
        if self.witness_client:
            self.witness_client.stop()


def setup(config: Config, service: TransparencyService) -> Replication:
    rep = Replication()
    if not config.tlog.enabled:
        return rep
    origin = _key_name(config.tlog.origin or default_origin(config), "tlog.origin", " (set tlog.origin)")
    key_path = config.tlog.note_key or config.data_dir / "keys" / "note.pem"
    signer = note.NoteSigner(origin, ed25519_key(key_path, create=config.tlog.note_key is None))
    service.max_entry_bytes = tiles.MAX_ENTRY
    rep.tiled = TiledLog(service.store, origin, signer)
    rep.routes.extend(tlog_routes(rep.tiled))
    _witness(config, rep, origin)
    _witness_client(config, rep)
    return rep


def _key_name(name: str, setting: str, hint: str = "") -> str:
    """`name` if it can name a note key, else a `ConfigError` about `setting`."""
    try:
        note.check_key_name(name)
    except ScittOciError as exc:
        raise ConfigError(f"{setting} {name!r}: {exc}{hint}") from None
    return name


def _witness(config: Config, rep: Replication, origin: str) -> None:
    """`witness.logs`: act as a tlog-witness for those logs."""
    if not config.witness.logs:
        return
    logs: dict[str, list[note.Verifier]] = {}
    for i, entry in enumerate(config.witness.logs):
        try:
            key = note.parse_vkey(entry.vkey)
        except ScittOciError as exc:
            raise ConfigError(f"witness.logs[{i}].vkey: {exc}") from None
        if key.sig_type != note.ED25519:
            raise ConfigError(f"witness.logs[{i}].vkey: {key.name} is not an Ed25519 note key (type 0x01)")
        logs.setdefault(entry.origin or key.name, []).append(key)
    name = _key_name(config.witness.name or origin.removesuffix("/tlog") + "/witness", "witness.name")
    key_path = config.witness.key or config.data_dir / "keys" / "witness.pem"
    cosigner = checkpoint.Cosigner(name, ed25519_key(key_path, create=config.witness.key is None))
    rep.witness = Witness(config.data_dir / "witness.db", cosigner, logs)
    rep.routes.extend(witness_routes(rep.witness))


def _witness_client(config: Config, rep: Replication) -> None:
    """`witnesses` and `witness_quorum`: have our checkpoints cosigned."""
    if config.witness_quorum > len(config.witnesses):
        raise ConfigError(
            f"witness_quorum {config.witness_quorum} is more than the {len(config.witnesses)} witnesses configured"
        )
    if not config.witnesses or rep.tiled is None:
        return
    peers = []
    for i, w in enumerate(config.witnesses):
        try:
            peers.append((w.url, parse_peer_key(w.vkey)))
        except ScittOciError as exc:
            raise ConfigError(f"witnesses[{i}].vkey: {exc}") from None
    store = CosignatureStore(config.data_dir / "cosignatures.db")
    client = WitnessClient(rep.tiled, peers, config.witness_quorum, store)
    rep.tiled.publish_size = client.publish_size
    rep.tiled.cosignatures = client.cosignatures
    rep.witness_client = client
