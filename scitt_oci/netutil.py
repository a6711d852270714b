"""Small network helpers with no heavy imports (the CLI's start-up time matters)."""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=4096)  # asked for every request's client address
def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def registry_url(text: str, *, insecure: bool) -> str:
    """`http(s)://host[:port]` for a registry written as host[:port] or as a URL: the one rule `serve`,
    `verify`, `history` and `backfill` share. Plain HTTP is used when `insecure` is set (or an http://
    URL says so, which also needs `insecure`), and only for loopback registries."""
    from urllib.parse import urlsplit

    from scitt_oci.errors import ConfigError

    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(f"registry {text!r} must be host[:port] or http(s)://host[:port]")
        scheme, netloc = parts.scheme, parts.netloc
    else:
        if not text or "/" in text:
            raise ConfigError(f"registry {text!r} must be host[:port] or http(s)://host[:port]")
        scheme, netloc = ("http" if insecure else "https"), text
    if scheme == "http":
        host = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
        if not is_loopback_host(host.strip("[]")):
            raise ConfigError(f"registry {text}: plain HTTP is allowed for loopback registries only")
        if not insecure:
            raise ConfigError(
                f"registry {text}: plain HTTP needs --registry-insecure (insecure: true in a configuration)"
            )
    return f"{scheme}://{netloc}"


def clear_text_refusal(url: str, proxy: str | None, what: str) -> str | None:
    """Why `what` (a credential) may not go to `url` through `proxy` (None: a direct connection), or None
    when it may: over https (through a proxy only inside a CONNECT tunnel), or over plain http directly to
    a loopback host. The rule the registry client keeps (plain HTTP for loopback registries only, and
    loopback never proxied), said once for every client that sends a credential."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https":
        return None
    origin = f"{parts.scheme}://{parts.netloc}"
    if not is_loopback_host(parts.hostname or ""):
        return f"{what} would cross the network in clear to {origin}: use https://{parts.netloc}"
    if proxy is not None:
        return (
            f"{what} would go in clear through the proxy for {origin} (HTTP_PROXY / ALL_PROXY): use "
            f"https://{parts.netloc}, or add {parts.hostname} to NO_PROXY"
        )
    return None
