"""Webhook trust: Standard Webhooks signatures and the allow-list of target hosts.

Signatures follow the Standard Webhooks specification (standardwebhooks.com, v1): every
attempt carries ``webhook-id`` (the delivery id: the same on every retry, the receiver's
deduplication key), ``webhook-timestamp`` (the attempt's time, integer Unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``. Signing
the id and the time with the body lets a receiver refuse a replayed request (the
``standardwebhooks`` libraries refuse timestamps more than five minutes off) and trust
the id it deduplicates on.

The key: a secret written ``whsec_<base64>`` (the spec's format) is the base64-decoded
bytes; any other secret is used as its UTF-8 bytes, as the pre-Standard
``X-Auditfed-Signature`` header always did, so configured secrets keep working.

The allow-list (``webhook_allowed_hosts``) limits where alerts may be sent: a webhook
whose host matches no entry is refused when the configuration is loaded. Entries are
host names (``siem.corp.example``), domains with a leading dot (``.corp.example``: the
domain and every name under it) and IP networks (``10.0.0.0/8``, ``::1/128``: URLs
whose host is an address in them). Names are matched as written, never by what they
resolve to: a DNS answer can change between a check and the connection.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from auditfed.errors import ConfigError

__all__ = ["SECRET_PREFIX", "HostAllowList", "legacy_signature", "signing_key", "standard_signature"]

#: The Standard Webhooks secret prefix (the rest is the key, base64).
SECRET_PREFIX = "whsec_"
#: A host name or (with a leading dot) a domain: dot-separated labels.
_HOST_PATTERN = re.compile(r"\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def signing_key(secret: str) -> bytes:
    """The HMAC key of a configured secret: ``whsec_<base64>`` decoded, else its UTF-8 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    encoded = secret[len(SECRET_PREFIX):]
    try:
        # Unpadded base64 is common (the reference libraries accept it): pad, then decode strictly.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ConfigError("webhooks: a secret starting with whsec_ must be followed by the key in "
                          "base64 (e.g. whsec_$(openssl rand -base64 32)); without the prefix the "
                          "secret is used as it is")
    return key


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one attempt: ``v1,`` + base64 HMAC-SHA256."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def legacy_signature(key: bytes, body: bytes) -> str:
    """The deprecated ``X-Auditfed-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of the body
    (keyed, as it always was, with the secret's UTF-8 bytes, ``whsec_`` or not).

    It covers the body only, so a captured request can be replayed; kept for one release
    so receivers can move to ``webhook-signature``.
    """
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class HostAllowList:
    """Where webhooks may point (see the module docstring for the entry forms)."""

    names: frozenset[str]
    domains: tuple[str, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    entries: tuple[str, ...]

    @classmethod
    def parse(cls, entries: Sequence[str]) -> HostAllowList:
        names: set[str] = set()
        domains: list[str] = []
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            text = str(entry).strip().lower().rstrip(".")
            network = _network(text)
            if network is not None:
                networks.append(network)
            elif not _HOST_PATTERN.fullmatch(text):
                raise ConfigError(f"webhook_allowed_hosts: {entry!r} is neither a host name, a domain "
                                  "with a leading dot (.corp.example) nor an IP network (10.0.0.0/8)")
            elif text.startswith("."):
                domains.append(text)
            else:
                names.add(text)
        return cls(frozenset(names), tuple(domains), tuple(networks), tuple(str(e) for e in entries))

    def allows(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names or any(host == d[1:] or host.endswith(d) for d in self.domains)
        return any(address in network for network in self.networks)

    def describe(self) -> str:
        return ", ".join(self.entries) or "(empty: no host)"


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
