"""A throw-away certificate authority for the sandbox's HTTPS endpoints.

MSAL refuses non-``https`` authorities and the production settings insist on ``https://`` URLs, so
the sandbox must speak real TLS. A fresh CA per run (never committed, never reused) keeps the trust
decision explicit: clients trust exactly this run's ``ca.pem`` through ``REQUESTS_CA_BUNDLE`` /
``SSL_CERT_FILE`` and nothing else changes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Certificates are valid from a little in the past (clock skew) to a few days ahead: long enough for
#: a soak test, short enough that a leaked file is worthless soon.
_BACKDATE = dt.timedelta(hours=1)
_VALIDITY = dt.timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    """Where the generated PEM files are. ``ca_file`` is what clients trust."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def generate_tls(workdir: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """Create a CA and a server certificate for ``hosts`` under ``workdir``; return the file paths.

    EC P-256 keys: generated in microseconds (RSA takes tens of milliseconds per key) and accepted by
    every client used here. The server certificate carries both IP and DNS SANs because clients match
    the host in the URL against the SAN of the matching type only.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Graph export sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Graph export sandbox CA"),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(workdir / "ca.pem", workdir / "server.pem", workdir / "server.key")
    _write(files.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(files.cert_file, server_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(files.key_file, server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ), private=True)
    # The CA key is never written: nothing else may ever be signed by this CA.
    return files


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )


def _san(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write a PEM file; private keys are created 0600 so other local users cannot read them."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
