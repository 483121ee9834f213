"""The webhook guard (SSRF): which URLs are stored, which addresses are sent to, and that the
request goes to the address that was checked (no second DNS look-up to rebind)."""

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from clickserver.webhook_guard import WebhookRefused, webhook_post, webhook_url_validate

REFUSAL = (
    "a private, loopback, link-local or otherwise non-public address: webhooks are sent to "
    "public addresses only (WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
)
HEADERS = {"X-Clickserver-Timestamp": "0", "X-Clickserver-Signature": "v1=00"}


@pytest.fixture(autouse=True)
def _guarded(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1/hook", "127.0.0.1"),
        ("http://10.0.0.1/hook", "10.0.0.1"),
        ("http://172.16.0.1/hook", "172.16.0.1"),
        ("http://192.168.1.1/hook", "192.168.1.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://0.0.0.0:8000/", "0.0.0.0"),
        ("http://100.64.0.1/", "100.64.0.1"),  # carrier-grade NAT
        ("http://224.0.0.1/", "224.0.0.1"),  # multicast (is_global says True)
        ("http://255.255.255.255/", "255.255.255.255"),
        ("http://[::1]/hook", "::1"),
        ("http://[::]/hook", "::"),
        ("http://[fe80::1%eth0]/hook", "fe80::1%eth0"),
        ("http://[fd00::1]/hook", "fd00::1"),
        ("http://[ff02::1]/hook", "ff02::1"),
        ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1"),
        ("http://[::ffff:169.254.169.254]/hook", "::ffff:169.254.169.254"),
        ("http://[2002:7f00:1::]/hook", "2002:7f00:1::"),  # 6to4 of 127.0.0.1
    ],
)
def test_a_non_public_ip_literal_is_refused(dns, url, address):
    with pytest.raises(WebhookRefused) as refused:
        webhook_url_validate(url)

    assert str(refused.value) == f"{address}, {REFUSAL}"


@pytest.mark.parametrize(
    "url", ["http://localhost/hook", "http://LOCALHOST.:8080/hook", "https://api.localhost/"]
)
def test_localhost_is_refused_by_name(dns, url):
    with pytest.raises(WebhookRefused) as refused:
        webhook_url_validate(url)

    assert "is this machine: webhooks are sent to public addresses only" in str(refused.value)


def test_a_name_that_resolves_to_loopback_is_refused(dns):
    dns.answers["hooks.example.com"] = ["127.0.0.1"]

    with pytest.raises(WebhookRefused) as refused:
        webhook_url_validate("https://hooks.example.com/x")

    assert str(refused.value) == f"hooks.example.com resolves to 127.0.0.1, {REFUSAL}"


def test_a_numeric_host_name_that_the_resolver_reads_as_loopback_is_refused():
    # 2130706433 is 127.0.0.1 written as one number: not an ipaddress literal, but
    # getaddrinfo reads it without DNS (so would the connection).
    with pytest.raises(WebhookRefused) as refused:
        webhook_url_validate("http://2130706433/hook")

    assert str(refused.value) == f"2130706433 resolves to 127.0.0.1, {REFUSAL}"


def test_a_public_literal_is_accepted_without_a_lookup_or_a_connection(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("no network at save time for an IP literal")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    monkeypatch.setattr(socket, "create_connection", fail)

    webhook_url_validate("https://93.184.216.34/hook")
    webhook_url_validate("https://[2606:4700::1111]:8443/hook")


def test_a_public_name_and_an_unresolvable_name_are_accepted(dns):
    dns.answers["hooks.example.com"] = ["93.184.216.34"]

    webhook_url_validate("https://hooks.example.com/x")
    # Not resolvable now: stored; the send-time check decides.
    webhook_url_validate("https://hooks.invalid/x")

    assert dns.lookups == {"hooks.example.com": 1}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "an http(s) URL"),
        ("javascript:alert(1)", "an http(s) URL"),
        ("https://", "an http(s) URL"),
        ("https://a b.example/", "an http(s) URL"),
        ("https://hooks.example.com/\n", "an http(s) URL"),
        (12, "an http(s) URL"),
        (
            "https://user:secret@hooks.example.com/x",
            "no user name or password in the URL (the signature authenticates)",
        ),
        ("https://hooks.example.com:0/x", "a port from 1 to 65535"),
        ("https://hooks.example.com:99999/x", "a port from 1 to 65535"),
    ],
)
def test_a_malformed_url_is_refused_even_when_private_networks_are_allowed(
    dns, settings, url, message
):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True

    with pytest.raises(WebhookRefused) as refused:
        webhook_url_validate(url)

    assert str(refused.value) == message


def test_the_setting_allows_private_addresses(dns, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    dns.answers["relay.lan"] = ["10.1.2.3"]

    for url in ("http://127.0.0.1:9000/hook", "http://localhost/hook", "https://relay.lan/slack"):
        webhook_url_validate(url)


# --- send time --------------------------------------------------------------------------------


def test_send_refuses_a_private_literal_before_connecting(receiver, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False

    with pytest.raises(WebhookRefused) as refused:
        webhook_post(receiver.url, body=b"{}", headers=HEADERS, timeout=5)

    assert str(refused.value) == f"127.0.0.1, {REFUSAL}"
    assert receiver.requests == []


def test_send_refuses_a_name_that_resolves_to_a_private_address(dns, receiver, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    dns.answers["hooks.example.com"] = ["127.0.0.1"]

    with pytest.raises(WebhookRefused) as refused:
        webhook_post(
            receiver.url.replace("127.0.0.1", "hooks.example.com"),
            body=b"{}",
            headers=HEADERS,
            timeout=5,
        )

    assert str(refused.value) == f"hooks.example.com resolves to 127.0.0.1, {REFUSAL}"
    assert receiver.requests == []


def test_send_connects_to_the_checked_address_not_a_second_answer(dns, receiver):
    """The name is looked up once; the connection goes to that answer (the receiver), not to
    whatever a second look-up would say (a TEST-NET address that nobody answers), and the Host
    header keeps the name."""
    dns.answers["rebind.example.com"] = ["127.0.0.1", "192.0.2.1"]
    url = receiver.url.replace("127.0.0.1", "rebind.example.com")
    port = url.split(":")[2].split("/")[0]

    answer = webhook_post(url, body=b"{}", headers=HEADERS, timeout=5)

    assert (answer.status, answer.head) == (200, b"status 200")
    assert dns.lookups == {"rebind.example.com": 1}
    assert receiver.requests[0]["headers"]["Host"] == f"rebind.example.com:{port}"


class TlsReceiver:
    """An HTTPS server on 127.0.0.1 whose certificate (from its own CA, which the client is
    told to trust through REQUESTS_CA_BUNDLE) names `hostname`; it records the SNI names."""

    def __init__(self, directory, hostname: str) -> None:
        now = datetime.now(UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        chain = directory / "server.pem"
        chain.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            + leaf.public_bytes(serialization.Encoding.PEM)
        )
        self.server_names: list[str | None] = []
        self.hosts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.hosts.append(self.headers["Host"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain)
        context.sni_callback = lambda sock, name, ctx: receiver.server_names.append(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True  # it listens on 127.0.0.1
    server = TlsReceiver(tmp_path, "hooks.example.com")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    yield server
    server.close()


def test_https_to_the_pinned_address_verifies_the_hostname_and_sends_it_as_sni(dns, tls_receiver):
    dns.answers["hooks.example.com"] = ["127.0.0.1"]
    dns.answers["elsewhere.example.com"] = ["127.0.0.1"]
    port = tls_receiver.port

    answer = webhook_post(
        f"https://hooks.example.com:{port}/hook", body=b"{}", headers=HEADERS, timeout=5
    )
    # The same address under a name the certificate does not carry: verification is on.
    with pytest.raises(requests.exceptions.SSLError):
        webhook_post(
            f"https://elsewhere.example.com:{port}/hook", body=b"{}", headers=HEADERS, timeout=5
        )

    assert answer.status == 200
    assert tls_receiver.hosts == [f"hooks.example.com:{port}"]
    assert tls_receiver.server_names == ["hooks.example.com", "elsewhere.example.com"]
    assert dns.lookups == {"hooks.example.com": 1, "elsewhere.example.com": 1}


def test_a_redirect_is_answered_not_followed(receiver):
    receiver.statuses = [302]

    answer = webhook_post(receiver.url, body=b"{}", headers=HEADERS, timeout=5, read_limit=3)

    assert (answer.status, answer.head) == (302, b"sta")
    assert len(receiver.requests) == 1


def test_a_name_that_does_not_resolve_at_send_is_a_connection_error(dns):
    with pytest.raises(requests.ConnectionError) as error:
        webhook_post("https://gone.invalid/hook", body=b"{}", headers=HEADERS, timeout=5)

    assert str(error.value).startswith("cannot resolve gone.invalid: ")


# --- fuzz -------------------------------------------------------------------------------------

HOSTS = st.one_of(
    st.text(max_size=80),
    st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
    st.from_regex(r"[a-z0-9.-]{1,70}(:[0-9]{0,6})?", fullmatch=True),
)
URLS = st.one_of(
    st.text(max_size=200),
    st.builds(
        "{}://{}{}/{}".format,
        st.sampled_from(["http", "https", "HTTP", "ftp", ""]),
        st.one_of(st.just(""), st.text(max_size=20).map(lambda user: f"{user}@")),
        HOSTS,
        st.text(max_size=20),
    ),
)


def _outcome(url) -> str:
    """ "" when stored, the refusal's message otherwise; any other exception propagates."""
    try:
        webhook_url_validate(url)
    except WebhookRefused as refused:
        return str(refused) or "(an empty message)"
    return ""


def _unresolvable(host, port, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.fuzz
@given(url=URLS)
@hypothesis_settings(max_examples=300, deadline=None, derandomize=True)
def test_any_text_is_stored_or_refused_with_a_message(url, fuzz_cases):
    """Never another exception (a 500 at save): urlsplit's ValueError, IDNA's UnicodeError and a
    bad port are refusals. A name does not reach DNS here (nothing resolves)."""
    fuzz_cases["test_any_text_is_stored_or_refused_with_a_message"] += 1
    with mock.patch.object(socket, "getaddrinfo", _unresolvable):
        outcome = _outcome(url)

    assert outcome != "(an empty message)"
    if outcome == "" and isinstance(url, str):
        assert url.lower().startswith(("http://", "https://"))
