"""The egress policy: which addresses a worker may connect to on a user's behalf.

Listeners run on the loopback range: 127.0.0.1 is what these tests' policies list, 127.0.0.2 is
an address they do not (Linux routes all of 127.0.0.0/8 to the loopback interface).
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import urllib.error
from collections.abc import Iterator

import pytest

from engine.net.egress import (
    REFUSED,
    EgressConfigError,
    EgressPolicy,
    EgressRefused,
    is_refusal,
    policy,
)

DEFAULT = EgressPolicy()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://localhost:8000/",
        "http://api.localhost/",
        "http://[::1]:30000/",
        "http://0.0.0.0:80/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        # 127.0.0.1 in other notations, and carried in IPv6.
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://[::ffff:127.0.0.1]/",
        "http://224.0.0.1/",
    ],
)
def test_the_default_refuses_every_non_public_address(url: str) -> None:
    assert DEFAULT.url_problem(url) == REFUSED


@pytest.mark.parametrize(
    "url", ["http://8.8.8.8/", "https://[2606:4700::1111]/", "http://gpu1:30000/", "https://x.org"]
)
def test_public_addresses_and_names_pass_validation(url: str) -> None:
    # Names are judged when connecting, after DNS.
    assert DEFAULT.url_problem(url) is None


def test_listed_networks_and_hosts_are_allowed() -> None:
    listed = EgressPolicy.parse(" 127.0.0.1 , 10.0.0.0/8,[fd00::]/8, gpu1, .cluster.internal,")
    assert listed.url_problem("http://127.0.0.1:1/") is None
    assert listed.url_problem("http://127.0.0.2:1/") == REFUSED
    assert listed.url_problem("http://10.200.0.9/") is None
    assert listed.url_problem("http://[fd12::1]/") is None
    assert listed.url_problem("http://192.168.0.1/") == REFUSED
    assert listed.allows_host("GPU1") and listed.allows_host("a.b.cluster.internal")
    assert not listed.allows_host("cluster.internal.evil.org")
    assert not listed.allows_host("gpu10")


def test_bad_entries_are_named() -> None:
    with pytest.raises(EgressConfigError) as raised:
        EgressPolicy.parse("10.0.0.0/8, http://gpu1, a b")
    message = str(raised.value)
    assert "GROUPWISE_EGRESS_ALLOW" in message
    assert "'http://gpu1'" in message and "'a b'" in message
    assert "'10.0.0.0/8'" not in message


def test_policy_reads_the_environment() -> None:
    assert policy({}) == EgressPolicy()
    assert policy({"GROUPWISE_EGRESS_ALLOW": "127.0.0.1"}).networks == (
        ipaddress.ip_network("127.0.0.1/32"),
    )


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 200 "inside", or redirects to ``self.server.redirect`` when that is set."""

    def do_GET(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        target = self.server.redirect  # type: ignore[attr-defined]
        if target:
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        body = b"inside"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def listeners() -> Iterator[dict[str, http.server.HTTPServer]]:
    """An HTTP listener on 127.0.0.1 and one on 127.0.0.2, counting the requests they get."""
    servers = {}
    for host in ("127.0.0.1", "127.0.0.2"):
        server = http.server.HTTPServer((host, 0), _Recorder)
        server.hits = 0  # type: ignore[attr-defined]
        server.redirect = None  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[host] = server
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


def _url(server: http.server.HTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}/"


def test_an_allowed_listener_answers(listeners: dict[str, http.server.HTTPServer]) -> None:
    allowed = EgressPolicy.parse("127.0.0.1")
    with allowed.urlopen(_url(listeners["127.0.0.1"]), timeout=30) as answer:
        assert answer.read() == b"inside"


def test_an_unlisted_listener_is_never_connected_to(
    listeners: dict[str, http.server.HTTPServer],
) -> None:
    allowed = EgressPolicy.parse("127.0.0.1")
    with pytest.raises(urllib.error.URLError) as raised:
        allowed.urlopen(_url(listeners["127.0.0.2"]), timeout=30)
    assert is_refusal(raised.value)
    assert str(raised.value.reason) == REFUSED
    assert listeners["127.0.0.2"].hits == 0  # type: ignore[attr-defined]


def test_a_redirect_is_followed_only_within_the_policy(
    listeners: dict[str, http.server.HTTPServer],
) -> None:
    inside, outside = listeners["127.0.0.1"], listeners["127.0.0.2"]
    inside.redirect = _url(outside)  # type: ignore[attr-defined]
    with pytest.raises(urllib.error.URLError) as raised:
        EgressPolicy.parse("127.0.0.1").urlopen(_url(inside), timeout=30)
    assert is_refusal(raised.value)
    assert inside.hits == 1  # type: ignore[attr-defined]
    assert outside.hits == 0  # type: ignore[attr-defined]
    # Listed too, the same redirect is followed to its answer.
    with EgressPolicy.parse("127.0.0.1,127.0.0.2").urlopen(_url(inside), timeout=30) as answer:
        assert answer.read() == b"inside"


def test_environment_proxies_are_not_used(
    listeners: dict[str, http.server.HTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would connect on the worker's behalf, unchecked: pointing one at the refused
    # listener must change nothing.
    monkeypatch.setenv("http_proxy", _url(listeners["127.0.0.2"]))
    monkeypatch.setenv("HTTP_PROXY", _url(listeners["127.0.0.2"]))
    with EgressPolicy.parse("127.0.0.1").urlopen(_url(listeners["127.0.0.1"]), timeout=30) as a:
        assert a.read() == b"inside"
    assert listeners["127.0.0.2"].hits == 0  # type: ignore[attr-defined]


def test_a_name_is_judged_by_what_it_resolves_to_when_connecting(
    listeners: dict[str, http.server.HTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: a name that passed validation (it is no literal address) resolves to a
    # refused address when the worker connects. No DNS server runs here, so the resolver
    # answers for that one name; every other look-up is the real one.
    real = socket.getaddrinfo
    port = listeners["127.0.0.2"].server_address[1]

    def resolve(host: str, *args: object, **kwargs: object) -> object:
        if host != "rebind.example":
            return real(host, *args, **kwargs)  # type: ignore[arg-type]
        if int(kwargs.get("flags", 0)) & socket.AI_NUMERICHOST:  # type: ignore[call-overload]
            raise socket.gaierror(socket.EAI_NONAME, "not a numeric host")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    allowed = EgressPolicy.parse("127.0.0.1")
    assert allowed.url_problem(f"http://rebind.example:{port}/") is None
    with pytest.raises(urllib.error.URLError) as raised:
        allowed.urlopen(f"http://rebind.example:{port}/", timeout=30)
    assert is_refusal(raised.value)
    assert listeners["127.0.0.2"].hits == 0  # type: ignore[attr-defined]
    # A listed name is trusted with whatever it resolves to.
    trusted = EgressPolicy.parse("127.0.0.1,rebind.example")
    with trusted.urlopen(f"http://rebind.example:{port}/", timeout=30) as answer:
        assert answer.read() == b"inside"


def test_the_refusal_is_an_os_error_that_says_only_the_policy() -> None:
    error = EgressRefused()
    assert isinstance(error, OSError)
    assert str(error) == REFUSED
    assert is_refusal(error) and not is_refusal(ConnectionRefusedError())
