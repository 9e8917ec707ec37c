"""App credentials made of X.509 certificates: generation, thumbprints and the Key Vault encodings.

An app registration's certificate credential is a self-signed RSA certificate whose private key signs
the client assertion. Entra finds the certificate by the thumbprint in the assertion's header:
``x5t#S256`` (SHA-256 of the DER, what MSAL sends with PS256 since 1.35) or ``x5t`` (SHA-1, with
RS256). Key Vault hands the key out through the certificate's backing secret, as PKCS#12 (base64, no
password) or PEM (key then certificate).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PKCS12 = "application/x-pkcs12"
PEM = "application/x-pem-file"
CONTENT_TYPES = {"pkcs12": PKCS12, "pem": PEM}

#: A new certificate is valid from a little in the past, so a client whose clock is behind still uses it.
_BACKDATE = dt.timedelta(minutes=5)


def new_certificate(*, days: float = 365, common_name: str = "graph-export") -> tuple[bytes, bytes]:
    """A fresh RSA 2048 key and a self-signed certificate for it: ``(private key PEM, cert PEM)``.

    The certificate ends ``days`` from now (negative: it has already expired; tiny: it expires during
    the test) and starts 5 minutes ago, or a day before its end when that is earlier.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc)
    not_after = now + dt.timedelta(days=days)
    not_before = min(now - _BACKDATE, not_after - dt.timedelta(days=1))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateInfo:
    """The public facts of a certificate that Entra and Key Vault work with."""

    certificate: x509.Certificate
    der: bytes
    sha1: bytes
    sha256: bytes
    not_before: float       # epoch seconds
    not_after: float
    subject: str

    @property
    def thumbprint(self) -> str:
        """The SHA-1 thumbprint as the portal shows it: upper-case hex."""
        return self.sha1.hex().upper()

    @property
    def x5t(self) -> str:
        """base64url (unpadded) SHA-1 thumbprint: Key Vault's ``x5t``, a JWT's ``x5t`` header."""
        return b64url(self.sha1)

    @property
    def x5t_s256(self) -> str:
        """base64url (unpadded) SHA-256 thumbprint: a JWT's ``x5t#S256`` header."""
        return b64url(self.sha256)


def inspect(cert_pem: bytes) -> CertificateInfo:
    """Parse a PEM certificate (the first one, if several) into :class:`CertificateInfo`."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertificateInfo(
        certificate=cert, der=der, sha1=cert.fingerprint(hashes.SHA1()), sha256=cert.fingerprint(hashes.SHA256()),
        not_before=cert.not_valid_before_utc.timestamp(), not_after=cert.not_valid_after_utc.timestamp(),
        subject=cert.subject.rfc4514_string())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_thumbprint(value: object) -> bytes | None:
    """A JWT header thumbprint as bytes, whatever the encoding: base64url or standard base64, padded or
    not (MSAL 1.x pads its base64url), or hex (some hand-made assertions). None if it is none of them."""
    if not isinstance(value, str) or not value or len(value) > 200:
        return None
    text = value.strip()
    if len(text) in (40, 64) and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    normal = text.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        decoded = base64.urlsafe_b64decode(normal + "=" * (-len(normal) % 4))
    except (ValueError, binascii.Error):
        return None
    return decoded if len(decoded) in (20, 32) else None


def pkcs12_value(private_key_pem: bytes, cert_pem: bytes, *, friendly_name: bytes | None = None) -> str:
    """What Key Vault returns as the backing secret of a PKCS#12 certificate: base64, no password."""
    key = serialization.load_pem_private_key(private_key_pem, None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    data = pkcs12.serialize_key_and_certificates(friendly_name, key, cert, None,  # type: ignore[arg-type]
                                                 serialization.NoEncryption())
    return base64.b64encode(data).decode("ascii")


def pem_value(private_key_pem: bytes, cert_pem: bytes) -> str:
    """What Key Vault returns as the backing secret of a PEM certificate: the key (PKCS#8), then the cert."""
    key = serialization.load_pem_private_key(private_key_pem, None)
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    return (pkcs8 + x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.PEM)).decode("ascii")
