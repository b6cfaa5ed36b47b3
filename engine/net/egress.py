"""Where a worker may connect on a user's behalf: the egress policy.

A user names URLs that the workers then connect to (``rollout.server_urls``, a run's
``webhook_url``). Left open, that lets any signed-in user reach what only the worker can: its own
loopback services (Redis, the broker, the database), the cloud's metadata address, the private
network behind it. So public addresses are allowed, and loopback, private, link-local, unspecified
and every other non-global address is refused unless the administrator lists it in
``GROUPWISE_EGRESS_ALLOW`` (comma-separated host names, ``.suffix`` domains and CIDRs).

The check runs twice: when a recipe or setting is validated (``url_problem``: literal addresses and
``localhost``, without DNS), and when a connection is made (``EgressPolicy.urlopen``), after DNS
resolution, on the very address connected to, so a name that resolves somewhere else later
(DNS rebinding) is caught too. Proxies from the environment are not used (they would connect on
our behalf, unchecked), and redirects are followed only to addresses the policy allows, since each
hop connects through the same check. A refusal says only ``REFUSED``: never what an internal
address answered, nor which address a name resolved to.

Servers a worker starts itself on its own loopback (colocated mode) are not user URLs: they are
reached under ``EgressPolicy.loopback()``.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: The environment variable an administrator lists allowed non-public destinations in.
SETTING = "GROUPWISE_EGRESS_ALLOW"
#: All a user is told of a refused destination.
REFUSED = "refused by the egress policy"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(OSError):
    """A connection the policy does not allow. An ``OSError``, so HTTP clients treat it as a
    failed connection (urllib wraps it in ``URLError``), never as an answer."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


class EgressConfigError(ValueError):
    """``GROUPWISE_EGRESS_ALLOW`` holds an entry that is neither a host name nor a CIDR."""


@dataclass(frozen=True)
class EgressPolicy:
    """Public addresses, plus the listed networks and host names, may be connected to."""

    #: Non-public networks allowed (``10.0.0.0/8``, ``127.0.0.1/32``).
    networks: tuple[Network, ...] = ()
    #: Host names allowed whatever they resolve to; an entry ``.example.org`` allows its subdomains.
    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> EgressPolicy:
        """The policy of a ``GROUPWISE_EGRESS_ALLOW`` value; raises ``EgressConfigError`` naming
        every entry that is not a host name, a ``.domain`` or an address/CIDR."""
        networks: list[Network] = []
        hosts: list[str] = []
        bad = []
        for entry in (item.strip() for item in text.split(",")):
            if not entry:
                continue
            try:
                bare = entry.replace("[", "").replace("]", "")  # [::1] and [fd00::]/8 too
                networks.append(ipaddress.ip_network(bare, strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            label = name.lstrip(".")
            if label and all(part.replace("-", "").isalnum() for part in label.split(".")):
                hosts.append(name)
            else:
                bad.append(entry)
        if bad:
            raise EgressConfigError(
                f"{SETTING} has entries that are neither host names nor addresses/CIDRs: "
                f"{', '.join(repr(b) for b in bad)}; write e.g. 10.0.0.0/8,gpu1,.cluster.internal"
            )
        return cls(tuple(networks), tuple(hosts))

    @classmethod
    def loopback(cls) -> EgressPolicy:
        """The worker's own loopback, for servers it started itself."""
        return cls((ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")))

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` is a listed name (or under a listed ``.domain``)."""
        name = host.lower().rstrip(".")
        return any(name == h or (h.startswith(".") and name.endswith(h)) for h in self.hosts)

    def allows_address(self, address: Address) -> bool:
        """Global addresses always; any other only inside a listed network."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # ::ffff:127.0.0.1 reaches 127.0.0.1: judge the IPv4 address it carries.
            address = address.ipv4_mapped
        if address.is_global and not address.is_multicast:
            return True
        return any(address.version == net.version and address in net for net in self.networks)

    def url_problem(self, url: str) -> str | None:
        """``REFUSED`` when ``url`` names a refused address outright (a literal address in any
        notation, or ``localhost``), else None. Names are judged at connect time."""
        host = urlsplit(url).hostname
        if not host or self.allows_host(host):
            return None
        if host == "localhost" or host.endswith(".localhost"):
            return None if self.allows_address(ipaddress.ip_address("127.0.0.1")) else REFUSED
        try:
            # Numeric forms only (127.1, 0x7f000001, 2130706433 are 127.0.0.1): no DNS here.
            infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
        except (socket.gaierror, UnicodeError, ValueError):
            return None
        addresses = {_address(info[4][0]) for info in infos}
        return None if all(self.allows_address(a) for a in addresses) else REFUSED

    def connect(
        self,
        address: tuple[str, int],
        timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """``socket.create_connection`` that resolves first and connects only to addresses the
        policy allows; raises ``EgressRefused`` when the name resolves to any other."""
        host, port = address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not self.allows_host(host) and not all(
            self.allows_address(_address(info[4][0])) for info in infos
        ):
            # One refused address refuses the name: a mix is how rebinding attacks look.
            raise EgressRefused
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as failure:
                error = failure
                sock.close()
        raise error or OSError(f"no address to connect to for {host}")

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener whose every connection, redirects included, goes through ``connect``
        and never through a proxy."""
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({}), _HTTPHandler(self), _HTTPSHandler(self)
        )

    def urlopen(self, request: urllib.request.Request | str, timeout: float) -> Any:
        """``urllib.request.urlopen`` under this policy (``URLError(EgressRefused)`` if refused)."""
        return self.opener().open(request, timeout=timeout)


def policy(environ: Mapping[str, str] | None = None) -> EgressPolicy:
    """The administrator's policy from ``GROUPWISE_EGRESS_ALLOW`` (default: nothing beyond public
    addresses), read afresh on each call so a worker follows its environment."""
    return EgressPolicy.parse((os.environ if environ is None else environ).get(SETTING, ""))


def is_refusal(error: BaseException) -> bool:
    """Whether ``error`` (or the ``URLError`` wrapping it) is this policy's refusal."""
    if isinstance(error, urllib.error.URLError):
        return isinstance(error.reason, EgressRefused)
    return isinstance(error, EgressRefused)


def _address(text: str | int) -> Address:
    # getaddrinfo gives IPv6 link-local addresses with their zone ("fe80::1%eth0").
    return ipaddress.ip_address(str(text).split("%", 1)[0])


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, egress: EgressPolicy) -> None:
        super().__init__()
        self.egress = egress

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)

    def _connection(self, host: str, **kwargs: Any) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(host, **kwargs)
        # The one place http.client opens its socket (HTTPS wraps this socket in TLS after).
        connection._create_connection = self.egress.connect  # type: ignore[attr-defined]
        return connection


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, egress: EgressPolicy) -> None:
        super().__init__()
        self.egress = egress

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req, context=self._context)  # type: ignore[attr-defined]

    def _connection(self, host: str, **kwargs: Any) -> http.client.HTTPSConnection:
        connection = http.client.HTTPSConnection(host, **kwargs)
        connection._create_connection = self.egress.connect  # type: ignore[attr-defined]
        return connection
