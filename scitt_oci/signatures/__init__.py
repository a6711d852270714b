"""Signature verification over bytes plus a trust configuration: Notation envelopes, cosign classic
signatures and Sigstore bundles. A format layer: no network, no files, no clock unless passed in.

`verify_signature` (in `artifact`) takes a signature manifest, its layer blobs, the subject's
descriptor and a `SignatureTrust`, and answers a `SignatureCheck`: verified or not, and why.
"""
