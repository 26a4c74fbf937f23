"""Client certificates for the identity platform: a PEM file's certificate and key, read and checked."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from exporter.files import CERTIFICATE_LIMIT, FileReadError, read_file


class CertificateError(ValueError):
    """The file cannot serve as a client certificate; the message says why and what to do."""


@dataclass(frozen=True)
class ClientCertificate:
    """What MSAL signs client assertions with. The key is kept unencrypted in memory only."""

    path: Path
    private_key_pem: str = field(repr=False)
    certificate_pem: str = field(repr=False)  # the leaf first, then any chain, as the file had them
    thumbprint_sha1: str  # hex, upper case, as the app registration shows it
    thumbprint_sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    send_chain: bool = False

    def __str__(self) -> str:
        return f"certificate {self.path} (thumbprint {self.thumbprint_sha1})"

    def problem(self, now: dt.datetime) -> str | None:
        """Why the platform would refuse it at `now` (expired, or not valid yet), or None.

        Checked at each sign-in, not at start-up: expiry needs no config change, and one tenant's
        expired certificate must not stop the others (or a restarted pod).
        """
        if self.not_after <= now:
            return (f"the certificate in {self.path} expired on {self.not_after:%Y-%m-%d}; create a new "
                    f"one, upload it to the app registration and replace the file")
        if self.not_before > now:
            return (f"the certificate in {self.path} is not valid before {self.not_before:%Y-%m-%d %H:%M}Z; "
                    f"check this host's clock")
        return None


def load_client_certificate(path: Path, password: str | None, *, send_chain: bool = False,
                            ) -> ClientCertificate:
    """Read a PEM file holding a certificate and its private key (optionally encrypted).

    Entra accepts RSA keys for certificate credentials, so other key types are refused here with
    a message, not by the platform later.
    """
    # cryptography costs 8 MiB of RSS: only configs with a certificate pay for it.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        data = read_file(path, CERTIFICATE_LIMIT)
    except FileReadError as err:
        raise CertificateError(str(err)) from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); put the "
                               f"certificate and its private key in one PEM file") from None
    key_blocks = [block for block in _pem_blocks(data) if b"PRIVATE KEY" in block.splitlines()[0]]
    if not key_blocks:
        raise CertificateError(f"{path} holds no private key; put the certificate and its private key "
                               f"in one PEM file (for a .pfx: openssl pkcs12 -in cert.pfx -out cert.pem "
                               f"-nodes)")
    encrypted = b"ENCRYPTED" in key_blocks[0].splitlines()[0]
    if encrypted and password is None:
        raise CertificateError(f"the private key in {path} is encrypted; set "
                               f"client_certificate_password_file or client_certificate_password_env")
    try:
        key = serialization.load_pem_private_key(
            key_blocks[0], password.encode() if encrypted and password is not None else None)
    except (ValueError, TypeError):
        raise CertificateError(f"cannot decrypt the private key in {path}: wrong password") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateError(f"the private key in {path} is not RSA; Entra ID certificate credentials "
                               f"need an RSA key")
    leaf = next((cert for cert in certificates if cert.public_key() == key.public_key()), None)
    if leaf is None:
        raise CertificateError(f"no certificate in {path} matches its private key")
    chain = [leaf, *(cert for cert in certificates if cert is not leaf)]
    der = leaf.public_bytes(serialization.Encoding.DER)
    unencrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    return ClientCertificate(
        path=path, private_key_pem=unencrypted,
        certificate_pem="".join(cert.public_bytes(serialization.Encoding.PEM).decode() for cert in chain),
        thumbprint_sha1=hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 -- the name Entra uses
        thumbprint_sha256=hashlib.sha256(der).hexdigest().upper(),
        not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc, send_chain=send_chain)


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks, current = [], []
    for line in data.splitlines():
        if line.startswith(b"-----BEGIN "):
            current = [line]
        elif current:
            current.append(line)
            if line.startswith(b"-----END "):
                blocks.append(b"\n".join(current) + b"\n")
                current = []
    return blocks
