"""The consumer's transparency service, as the promotion uses it: register a statement, get a receipt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import PromotionError
from scitt_oci.scrapi.client import ScrapiClient


class CounterSigner(Protocol):
    """The consumer's transparency service."""

    identity: str
    keys: Sequence[CoseKey]

    def register(self, statement: bytes) -> bytes:
        """Register `statement`; return its receipt."""


@dataclass
class ScrapiCounterSigner:
    """A SCRAPI service as the `CounterSigner`: its receipts are checked against the keys it publishes."""

    client: ScrapiClient
    identity: str
    keys: Sequence[CoseKey] = ()

    @classmethod
    def connect(cls, client: ScrapiClient, identity: str) -> ScrapiCounterSigner:
        found = tuple(client.keys())
        if not found:
            raise PromotionError(f"{identity} publishes no keys at /.well-known/scitt-keys")
        return cls(client, identity, found)

    def register(self, statement: bytes) -> bytes:
        return self.client.register(statement).receipt
