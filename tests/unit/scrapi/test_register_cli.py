"""`scitt-oci register --token-file` refuses, before it sends anything, to put the token on the wire in
clear: to a service beyond loopback over plain HTTP, or through an HTTP proxy."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from scitt_oci.cli import main
from tests.loopproxy import LoopProxy
from tests.unit.scrapi.scripted import Reply, Scripted
from tests.unit.server.support import statement_bytes

TOKEN = "registration-token-0123456789"


def test_register_refuses_to_send_its_token_in_clear(tmp_path: Path) -> None:
    (tmp_path / "s.cose").write_bytes(statement_bytes(1))
    (tmp_path / "tok").write_text(TOKEN + "\n")
    service = Scripted(Reply(503, b"busy", {"Retry-After": "0"}))
    try:
        named = service.url.replace("127.0.0.1", "ts.proxied.test")  # reachable only through the proxy
        with LoopProxy() as proxy:
            result = CliRunner().invoke(
                main,
                ["register", str(tmp_path / "s.cose"), "--ts", named, "--token-file", str(tmp_path / "tok")],
                env={"HTTP_PROXY": proxy.url, "NO_PROXY": ""},
            )
            assert result.exit_code == 2, result.output
            assert f"transparency service {named}: the bearer token would cross the network in clear" in result.output
            assert f"use https://{named.split('://')[1]}" in result.output
            assert TOKEN not in result.output
            assert sum(proxy.seen["forwarded"].values()) == 0  # refused before a byte went out
        assert service.requests() == []
    finally:
        service.close()
