"""One entry point over a signature manifest: pick the format's verifier and hand it the layers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from scitt_oci.oci.manifest import Descriptor, Manifest
from scitt_oci.signatures import cosign, notation, sigstore_bundle
from scitt_oci.signatures.model import Format, SignatureCheck
from scitt_oci.signatures.trust import SignatureTrust

MAX_SIGNATURE_LAYERS = 16
MAX_LAYER_BYTES = 1 << 20


def layers_to_fetch(fmt: Format, manifest: Manifest) -> list[Descriptor]:
    """The layer blobs the verifier of `fmt` reads (small ones only; bigger layers are reported unread)."""
    wanted = manifest.layers[:1] if fmt in (Format.NOTATION, Format.COSIGN_BUNDLE) else manifest.layers
    return [d for d in wanted[:MAX_SIGNATURE_LAYERS] if d.size <= MAX_LAYER_BYTES]


def verify_signature(
    fmt: Format,
    manifest: Manifest,
    blobs: Mapping[str, bytes],
    subject: Descriptor,
    trust: SignatureTrust,
    now: dt.datetime,
) -> SignatureCheck:
    """Verify the signature manifest `manifest` of `fmt` over `subject`; `blobs` maps layer digests to bytes.

    Never raises: hostile bytes that trip a parser below are "not verified" with what went wrong."""
    try:
        return _verify(fmt, manifest, blobs, subject, trust, now)
    except Exception as exc:  # a pusher controls every byte here; none of it may stop the watcher
        return SignatureCheck.failed(fmt, f"the signature cannot be checked: {type(exc).__name__}: {exc}"[:1000])


def _verify(
    fmt: Format,
    manifest: Manifest,
    blobs: Mapping[str, bytes],
    subject: Descriptor,
    trust: SignatureTrust,
    now: dt.datetime,
) -> SignatureCheck:
    layers = [(d, blobs[d.digest]) for d in manifest.layers[:MAX_SIGNATURE_LAYERS] if d.digest in blobs]
    if fmt is Format.COSIGN:
        return cosign.verify(layers, subject.digest, trust, now)
    if not layers:
        return SignatureCheck.failed(fmt, "the signature manifest has no readable layer")
    layer, blob = layers[0]
    if fmt is Format.NOTATION:
        target = notation.Subject(subject.digest, subject.size, subject.media_type)
        return notation.verify(blob, layer.media_type, target, trust, now)
    return sigstore_bundle.verify(blob, subject.digest, trust)
