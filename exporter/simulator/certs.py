"""A throwaway CA and a loopback server certificate, generated at start for the simulator."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path
    # A client certificate from the same CA, for mutual TLS tests.
    client_cert_file: Path
    client_key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "partnercenter-exporter simulator"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_certs(directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
                   days: int = 30) -> CertFiles:
    """Write ca.pem, server.pem, server-key.pem, client.pem and client-key.pem.

    The server certificate is valid for `hosts`; the client certificate is for mutual TLS.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    until = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("partnercenter-exporter simulator CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    files = CertFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem",
                      directory / "client.pem", directory / "client-key.pem")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cert_file, key_file, common_name, usage, alt_names in (
            (files.cert_file, files.key_file, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, names),
            (files.client_cert_file, files.client_key_file, "prometheus",
             ExtendedKeyUsageOID.CLIENT_AUTH, None)):
        _leaf(cert_file, key_file, common_name, usage, alt_names, ca_key=ca_key, ca_name=ca_name,
              ca_ski=ca_ski, valid=(now, until))
    return files


def _leaf(cert_file: Path, key_file: Path, common_name: str, usage: x509.ObjectIdentifier,
          alt_names: list[x509.GeneralName] | None, *, ca_key: ec.EllipticCurvePrivateKey,
          ca_name: x509.Name, ca_ski: x509.SubjectKeyIdentifier,
          valid: tuple[dt.datetime, dt.datetime]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert_file.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
