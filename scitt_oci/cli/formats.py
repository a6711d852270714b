"""Commands over the formats: keys, statements, offline verification."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from scitt_oci.cli import EXIT_INVALID, _die, _read, _write, main, registry_ca_file, usable_ca_file, write_private
from scitt_oci.cose import algorithms, keys
from scitt_oci.cose.hash_envelope import BY_OCI_ALGORITHM, HashEnvelope
from scitt_oci.errors import ScittOciError
from scitt_oci.netutil import registry_url
from scitt_oci.oci.reference import Digest, Reference
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.scitt import transparent
from scitt_oci.verify.trust import TrustPolicy, load_policy
from scitt_oci.verify.verifier import VerificationResult, verify_transparent_statement


# ----------------------------------------------------------------------------- keys
@main.group("keys")
def keys_group() -> None:
    """Create and export signing keys."""


@keys_group.command("generate")
@click.option(
    "--alg",
    default="ES256",
    show_default=True,
    type=click.Choice(list(algorithms.BY_NAME), case_sensitive=False),
    help="Signature algorithm.",
)
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False), help="Private key file (PEM, written 0600)."
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def keys_generate(alg: str, out: str, force: bool) -> None:
    """Generate a private key; print its kid (RFC 9679 thumbprint) and public COSE_Key."""
    key = keys.generate(algorithms.by_name(alg))
    write_private(Path(out), key.private_pem(), force=force)
    click.echo(f"kid: {key.kid.hex()}")
    click.echo(f"alg: {key.alg.name if key.alg else '-'}")
    from scitt_oci.scitt import describe  # imported here: start-up time of the other commands

    click.echo(f"cose_key: {json.dumps(describe.plain(key.to_cose()))}")
    click.echo(f"private key written to {out} (mode 0600)")


@keys_group.command("export")
@click.argument("key_file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jwks", "cose", "pem"]),
    default="jwks",
    show_default=True,
    help="jwks: JSON Web Key Set; cose: COSE Key Set (CBOR); pem: SubjectPublicKeyInfo.",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of standard output.")
def keys_export(key_file: str, fmt: str, out: str | None) -> None:
    """Export the public half of a key file, e.g. for a trust policy. Never exports private keys."""
    data = _read(key_file, "key file")
    try:
        loaded = keys.load_key_file(data)
    except ScittOciError as exc:
        _die(f"{key_file}: {exc.diagnostics()}")
    if fmt == "jwks":
        body = (json.dumps({"keys": [k.to_jwk() for k in loaded]}, indent=2) + "\n").encode()
    elif fmt == "cose":
        body = keys.dump_cose_key_set(loaded)
    else:
        body = b"".join(k.public_pem() for k in loaded)
    if out:
        _write(out, body)
    else:
        sys.stdout.buffer.write(body)


@keys_group.command("did-x509")
@click.argument("ca_file", type=click.Path(dir_okay=False))
@click.option(
    "--subject", "subjects", multiple=True, help="Leaf subject attribute, e.g. O=Wabbit Networks (repeatable)."
)
@click.option("--san", help="Leaf SAN: email:..., dns:... or uri:...")
@click.option(
    "--eku", "ekus", multiple=True, help="Leaf EKU OID, e.g. 1.3.6.1.5.5.7.3.3 for code signing (repeatable)."
)
@click.option(
    "--fingerprint-alg", default="sha256", show_default=True, type=click.Choice(["sha256", "sha384", "sha512"])
)
@click.option(
    "--check",
    "check_chain",
    type=click.Path(dir_okay=False),
    help="A chain (PEM, leaf first) the DID must resolve for.",
)
def keys_did_x509(
    ca_file: str,
    subjects: tuple[str, ...],
    san: str | None,
    ekus: tuple[str, ...],
    fingerprint_alg: str,
    check_chain: str | None,
) -> None:
    """Print the did:x509 identifier for leaves under the CA certificate CA_FILE (PEM) with these
    predicates: an iss a trust policy issuer can pin, or statements can carry (docs/trust-policy.md)."""
    from cryptography import x509  # imported here: start-up time of the other commands

    from scitt_oci.scitt import did_x509

    try:
        [ca, *_rest] = x509.load_pem_x509_certificates(_read(ca_file, "CA certificate"))
        pairs = []
        for item in subjects:
            name, sep, value = item.partition("=")
            if not sep or not value:
                _die(f"--subject {item!r}: expected NAME=VALUE, e.g. O=Wabbit Networks")
            pairs.append((name.strip(), value))
        san_pair = None
        if san is not None:
            kind, sep, value = san.partition(":")
            if not sep or kind not in did_x509.SAN_TYPES:
                _die(f"--san {san!r}: expected email:..., dns:... or uri:...")
            san_pair = (kind, value)
        if not pairs and san_pair is None and not ekus:
            _die("give at least one of --subject, --san and --eku: a did:x509 needs a predicate")
        did = did_x509.create(ca, subject=pairs, san=san_pair, eku=list(ekus), alg=fingerprint_alg)
        if check_chain is not None:
            chain = x509.load_pem_x509_certificates(_read(check_chain, "chain"))
            if ca not in chain:
                chain.append(ca)
            did_x509.resolve(did, chain)
    except ValueError as exc:
        _die(f"cannot read the certificates: {exc}")
    except ScittOciError as exc:
        _die(exc.diagnostics())
    click.echo(did)


# ----------------------------------------------------------------------------- statement
@main.group("statement")
def statement_group() -> None:
    """Create and inspect Signed Statements."""


def _load_signing_key(path: str, alg: str | None) -> keys.CoseKey:
    try:
        return keys.load_private_pem(_read(path, "key file"), alg=algorithms.by_name(alg) if alg else None)
    except ScittOciError as exc:
        _die(f"{path}: {exc.diagnostics()}")


PROFILE_KINDS = ("push", "delete", "deploy")  # signature statements are the watcher's: it verifies the signature


@statement_group.command("create")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False), help="Issuer private key (PEM).")
@click.option(
    "--alg",
    type=click.Choice(list(algorithms.BY_NAME), case_sensitive=False),
    help="Signature algorithm (default: from the key; PS256 for RSA).",
)
@click.option("--issuer", required=True, help="CWT iss: the issuer's identity, e.g. https://wabbit-networks.example.")
@click.option(
    "--profile",
    "kind",
    type=click.Choice(PROFILE_KINDS),
    help="Make a scitt-oci profile statement (docs/profile.md) of this kind about --image, as the watcher does.",
)
@click.option("--image", help="With --profile: the image, REGISTRY/REPO@DIGEST (its sub and payload).")
@click.option(
    "--detail",
    "details",
    multiple=True,
    metavar="NAME=VALUE",
    help="With --profile: a kind's field (push, delete: tag; deploy: cluster, namespace, workload); repeatable.",
)
@click.option("--subject", help="CWT sub: what the statement is about, e.g. oci://host/repo@sha256:...")
@click.option("--file", "artifact", type=click.Path(dir_okay=False), help="Artifact to hash (SHA-256).")
@click.option("--digest", help="Artifact digest instead of a file, as sha256:<hex> or sha512:<hex> (an OCI digest).")
@click.option("--media-type", help="Media type of the artifact (hash envelope 259).")
@click.option("--location", help="Where the artifact can be found (hash envelope 260).")
@click.option(
    "--x5chain",
    "chain_file",
    type=click.Path(dir_okay=False),
    help="Certificate chain (PEM, leaf first; the leaf certifies --key) to carry in the protected header.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the statement.")
def statement_create(
    key_file: str,
    alg: str | None,
    issuer: str,
    kind: str | None,
    image: str | None,
    details: tuple[str, ...],
    subject: str | None,
    artifact: str | None,
    digest: str | None,
    media_type: str | None,
    location: str | None,
    chain_file: str | None,
    out: str,
) -> None:
    """Sign a hash-envelope Signed Statement (RFC 9995) over a file or an OCI digest, or (--profile) a
    scitt-oci profile statement about an image, the kind `verify IMAGE` and `verify --digest` require.

    \b
    scitt-oci statement create --key issuer.pem --issuer https://wabbit.example \\
        --subject urn:sbom:net-monitor --file sbom.json --out s.cose
    scitt-oci statement create --key issuer.pem --issuer https://wabbit.example \\
        --profile push --image registry.example/net-monitor@sha256:... --out push.cose
    """
    if kind is not None:
        if subject or artifact or digest or location:
            _die("--profile takes --image (and --media-type, --detail), not --subject, --file, --digest or --location")
        if image is None:
            _die("--profile needs --image REGISTRY/REPO@DIGEST")
        signer = _load_signing_key(key_file, alg)
        signed = _profile_statement(signer, issuer, kind, image, media_type, details)
        _write(out, signed.encode())
        click.echo(f"{kind} statement about {image} written to {out} (kid {signer.kid.hex()})")
        return
    if image is not None or details:
        _die("--image and --detail go with --profile")
    if subject is None:
        _die("give --subject (or --profile with --image)")
    if (artifact is None) == (digest is None):
        _die("give exactly one of --file and --digest")
    key = _load_signing_key(key_file, alg)
    if artifact is not None:
        hash_alg, raw = -16, hashlib.sha256(_read(artifact, "artifact")).digest()
    else:
        try:
            parsed = Digest.parse(str(digest))
        except ScittOciError as exc:
            _die(exc.diagnostics())
        hash_alg, raw = BY_OCI_ALGORITHM[parsed.algorithm], parsed.raw
    ders = _chain_ders(chain_file, key) if chain_file is not None else None
    try:
        signed = statement_mod.build(
            key,
            issuer=issuer,
            subject=subject,
            payload=raw,
            envelope=HashEnvelope(hash_alg, raw, media_type, location),
            iat=int(time.time()),
            x5chain=ders,
        )
    except ScittOciError as exc:
        _die(exc.diagnostics())
    _write(out, signed.encode())
    click.echo(f"statement written to {out} (kid {key.kid.hex()}, payload {raw.hex()})")


def _chain_ders(chain_file: str, key: keys.CoseKey) -> list[bytes]:
    from cryptography import x509  # imported here: start-up time of the other commands
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        chain = x509.load_pem_x509_certificates(_read(chain_file, "certificate chain"))
    except ValueError as exc:
        _die(f"{chain_file}: cannot read the certificates: {exc}")
    if chain[0].public_key() != key.public:
        _die(f"{chain_file}: the first certificate ({chain[0].subject.rfc4514_string()}) does not certify --key")
    return [c.public_bytes(Encoding.DER) for c in chain]


def _profile_statement(
    key: keys.CoseKey, issuer: str, kind: str, image: str, media_type: str | None, details: tuple[str, ...]
) -> statement_mod.SignedStatement:
    from scitt_oci.scitt import profile

    fields: dict[str, str] = {}
    for d in details:
        name, sep, value = d.partition("=")
        if not sep or not name:
            _die(f"--detail {d!r} must be NAME=VALUE")
        if name in ("kind", "subject", "recorded_digest", "media_type"):
            _die(f"--detail {name} is not a field of {kind} statements")
        fields[name] = value
    try:
        ref = Reference.parse(image)
        if ref.digest is None:
            _die(f"--image {image} must name a digest (REGISTRY/REPO@sha256:...): a statement records one image")
        event = profile.make_event(profile.Kind(kind), ref, recorded_digest=None, media_type=media_type, **fields)
        return profile.build(key, issuer, event, iat=int(time.time()))
    except ScittOciError as exc:
        _die(exc.diagnostics())


@statement_group.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def statement_inspect(file: str, output: str) -> None:
    """Decode a Signed or Transparent Statement: headers, claims, payload and receipts. Verifies nothing."""
    try:
        parsed = transparent.parse(_read(file, "statement"), unknown_critical=True)
    except ScittOciError as exc:
        _die(f"{file}: {exc.diagnostics()}")
    from scitt_oci.scitt import describe

    view = describe.transparent_statement(parsed)
    if output == "json":
        click.echo(json.dumps(view, indent=2))
        return
    _print_tree(view, 0)


def _print_tree(value: Any, depth: int) -> None:
    pad = "  " * depth
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                click.echo(f"{pad}{k}:")
                _print_tree(v, depth + 1)
            else:
                click.echo(f"{pad}{k}: {json.dumps(v) if not isinstance(v, str) else v}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            click.echo(f"{pad}[{i}]")
            _print_tree(v, depth + 1)
    else:
        click.echo(f"{pad}{value}")


# ----------------------------------------------------------------------------- verify
@main.command("verify")
@click.argument("image", required=False)
@click.option(
    "--statement",
    "statement_file",
    type=click.Path(dir_okay=False),
    help="A Transparent Statement, or a Signed Statement with --receipt (instead of IMAGE).",
)
@click.option(
    "--trust",
    "policy_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Trust policy YAML (docs/trust-policy.md).",
)
@click.option(
    "--receipt",
    "receipt_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A detached receipt (repeatable).",
)
@click.option("--digest", help="Also require a scitt-oci statement about this image digest (sha256:<hex>).")
@click.option("--registry-insecure", is_flag=True, help="With IMAGE: plain HTTP to a loopback registry.")
@registry_ca_file
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    help="With IMAGE: seconds for all of its registry calls together (connecting, headers and bodies).",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def verify(
    image: str | None,
    statement_file: str | None,
    policy_file: str,
    receipt_files: tuple[str, ...],
    digest: str | None,
    registry_insecure: bool,
    ca_file: str | None,
    timeout: float,
    output: str,
) -> None:
    """Verify an image's record, or one statement, against a trust policy; offline but for the registry.

    \b
    scitt-oci verify registry.example/app@sha256:... --trust policy.yaml
        finds the Transparent Statements attached to the image (referrers API or the tag-schema
        fallback), verifies each, and applies the policy: statements about this digest, trusted
        issuers, receipts from enough trusted services, required kinds, signatures and age.
    scitt-oci verify --statement ts.cose --trust policy.yaml [--receipt r.cose]
        verifies one statement file.

    Exit 0 when valid (admitted), 1 when not (reasons printed), 2 on usage errors, unreadable input
    or an unreachable registry.
    """
    if (image is None) == (statement_file is None):
        _die("give an IMAGE or --statement FILE (one of them)")
    try:
        policy = load_policy(policy_file)
    except ScittOciError as exc:
        _die(exc.diagnostics())
    if image is not None:
        _verify_image(image, policy, registry_insecure, usable_ca_file(ca_file, registry_insecure), timeout, output)
        return
    assert statement_file is not None
    if digest is not None:
        try:
            Digest.parse(digest)
        except ScittOciError as exc:
            _die(exc.diagnostics())
    data = _read(statement_file, "statement")
    receipts = [_read(f, "receipt") for f in receipt_files]
    result = verify_transparent_statement(data, policy, detached_receipts=receipts, digest=digest)
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print_result(result)
    sys.exit(0 if result.valid else EXIT_INVALID)


def _print_result(result: VerificationResult) -> None:
    click.echo(f"{result.decision}")
    click.echo(
        f"  issuer:  {result.issuer}" + (f" (trusted as {result.trusted_issuer})" if result.trusted_issuer else "")
    )
    click.echo(f"  subject: {result.subject}")
    if result.chain_time is not None:
        binding = f", iss bound by {result.issuer_binding}" if result.issuer_binding else ""
        when = result.chain_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(f"  certificate chain valid at {when} ({result.chain_time_source}){binding}")
    for r in result.receipts:
        if r.valid:
            where = _receipt_position(r.tree_size, r.leaf_index, bool(r.tree_size_signed))
            click.echo(
                f"  receipt {r.index}: valid, from {r.service} (vds {r.vds}, entry rule {r.entry_rule}, {where})"
            )
        elif r.finding:
            click.echo(f"  receipt {r.index}: invalid: {r.finding.reason.value}: {r.finding.message}")
    for f in result.findings:
        click.echo(f"  {f.reason.value}: {f.message}")


def _receipt_position(size: int | None, index: int | None, size_signed: bool) -> str:
    """Where a receipt puts the entry, saying which numbers its signature covers: in vds 1 only the
    root is signed, plus the tree size when the service signs it (scitt-oci does)."""
    if size is None:
        return "CCF ledger"
    return (
        f"leaf index {index} (unsigned, from the proof), "
        f"tree size {size} ({'signed' if size_signed else 'unsigned, from the proof'})"
    )


def _verify_image(
    image: str, policy: TrustPolicy, insecure: bool, ca_file: str | None, timeout: float, output: str
) -> None:
    from scitt_oci.oci.attached import attached_statements, pin
    from scitt_oci.oci.client import RegistryClient, RegistrySettings  # imported here: start-up time of other commands
    from scitt_oci.verify.image import decide

    try:
        ref = Reference.parse(image)
        settings = RegistrySettings.for_url(
            registry_url(ref.registry, insecure=insecure), timeout=timeout, attempts=2, ca_file=ca_file
        )
        client = RegistryClient(settings, deadline=time.monotonic() + timeout)
        pinned = pin(client, ref)
        if pinned is None:
            _die(f"{image} does not exist")
        if ref.digest is None:
            click.echo(f"warning: {image} is a tag, resolved to {pinned.digest}; verify by digest, tags move", err=True)
        ref = pinned
        blobs = attached_statements(client, ref)
    except ScittOciError as exc:
        _die(f"{image}: {exc.diagnostics()}")
    verdict = decide(ref, blobs, policy)
    if output == "json":
        click.echo(json.dumps(verdict.to_json(), indent=2))
    else:
        click.echo(("ADMIT" if verdict.allowed else "REJECT") + (" (audit mode)" if verdict.mode == "audit" else ""))
        click.echo(f"  {verdict.summary()}")
        for i, s in enumerate(verdict.statements):
            kind = s.event.kind.value if s.event else "?"
            state = "valid" if s.valid else "invalid: " + ", ".join(s.reason_codes)
            click.echo(
                f"  statement {i}: {kind}, {state}; receipts from {', '.join(s.services) or 'no trusted service'}"
            )
    sys.exit(0 if verdict.allowed else EXIT_INVALID)
