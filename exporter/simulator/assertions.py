"""Client assertions as the identity platform checks them: certificate (private_key_jwt) and
federated (workload identity) JWTs, and a stand-in for a cluster's OIDC issuer that signs the latter.

Entra's checks and texts, from Microsoft's pages and the errors users report:
- Certificate credentials: a JWT with `x5t` (SHA-1) or `x5t#S256` naming a certificate registered
  on the app, signed RS256 or PS256 by its key, `aud` the token endpoint, `iss` = `sub` = the
  client id (learn.microsoft.com/entra/identity-platform/certificate-credentials). An unknown
  key or a bad signature is AADSTS700027 "Client assertion contains an invalid signature" with
  the reason and thumbprint; a time outside exp/nbf is AADSTS700024.
- Federated credentials: `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:
  jwt-bearer`, a JWT from an issuer whose issuer, subject and audience (api://AzureADTokenExchange)
  match a federated identity credential on the app, else AADSTS70021 "No matching federated
  identity record found for presented assertion" (learn.microsoft.com/entra/workload-id/
  workload-identity-federation; Azure/azure-workload-identity issue 616 shows the text).
- A value that is not a JWT (such as the text "b'eyJ...'") is AADSTS50027.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 -- an audience
# Entra allows a few minutes of clock skew on assertion times.
CLOCK_SKEW = 300


@dataclass(frozen=True)
class Refusal:
    """An assertion the platform refuses: the HTTP status, the OAuth error and the AADSTS code."""

    status: int
    error: str
    code: int
    text: str


@dataclass
class FederatedCredential:
    issuer: str
    subject: str
    audience: str = TOKEN_EXCHANGE_AUDIENCE


@dataclass
class AppCredentials:
    """What an app registration accepts besides a secret."""

    certificates: list[x509.Certificate] = field(default_factory=list)
    federated: list[FederatedCredential] = field(default_factory=list)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def write_client_certificate(path: Path, common_name: str = "partnercenter-exporter",
                             days: int = 365, valid_from: dt.datetime | None = None) -> x509.Certificate:
    """A self-signed RSA certificate and its key in one PEM file (0600), as an admin would make
    with openssl for an app registration; returns the certificate to register. Valid from an hour
    ago unless `valid_from` says otherwise, for `days`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = valid_from or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256()))
    path.touch(mode=0o600)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert


class OidcIssuer:
    """Signs federated tokens as a Kubernetes cluster's service account issuer does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def token(self, subject: str, *, audience: str = TOKEN_EXCHANGE_AUDIENCE, lifetime: int = 3600,
              now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        claims = {"iss": self.url, "sub": subject, "aud": [audience], "iat": issued, "nbf": issued,
                  "exp": issued + lifetime, "jti": secrets.token_hex(8)}
        signed = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signed}.{b64url(signature)}"


def parse_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, the signed part and the signature; ValueError if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not three parts")
    try:
        header, claims = json.loads(_unb64url(parts[0])), json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("not JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def _signature_ok(public_key: Any, alg: str, signed: bytes, signature: bytes) -> bool:
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    if alg == "RS256":
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
    elif alg == "PS256":
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
    else:
        return False
    try:
        public_key.verify(signature, signed, pad, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _thumbprints(cert: x509.Certificate) -> tuple[bytes, bytes]:
    return cert.fingerprint(hashes.SHA1()), cert.fingerprint(hashes.SHA256())  # noqa: S303 -- x5t is SHA-1


def _time_refusal(claims: dict[str, Any], now: float) -> Refusal | None:
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
    if not isinstance(exp, int | float) or exp + CLOCK_SKEW < now or (
            isinstance(nbf, int | float) and nbf - CLOCK_SKEW > now):
        return Refusal(400, "invalid_client", 700024, f"Client assertion is not within its valid time "
                                                      f"range. Current time: {_when(now)}, expiry time of "
                                                      f"assertion {_when(exp)}.")
    return None


def _when(value: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    except (TypeError, ValueError, OverflowError):
        return "unknown"


def verify_client_assertion(form: dict[str, str], *, client_id: str, token_endpoint: str,
                            app: AppCredentials, issuers: dict[str, OidcIssuer],
                            now: float) -> Refusal | None:
    """None if the assertion proves `client_id`, else what Entra answers."""
    if form.get("client_assertion_type") != JWT_BEARER:
        return Refusal(400, "invalid_request", 50027, f"Invalid client_assertion_type "
                                                      f"'{form.get('client_assertion_type', '')}'.")
    try:
        header, claims, signed, signature = parse_jwt(form.get("client_assertion", ""))
    except ValueError:
        return Refusal(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
    if "x5t" in header or "x5t#S256" in header:
        return _certificate_refusal(header, claims, signed, signature, client_id=client_id,
                                    token_endpoint=token_endpoint, app=app, now=now)
    issuer = issuers.get(str(claims.get("iss")))
    aud = claims.get("aud")
    audiences: list[Any] = aud if isinstance(aud, list) else [aud]
    matches = [fic for fic in app.federated if fic.issuer == claims.get("iss")
               and fic.subject == claims.get("sub") and fic.audience in audiences]
    if not matches or issuer is None or not _signature_ok(issuer.public_key, str(header.get("alg")),
                                                          signed, signature):
        return Refusal(400, "invalid_request", 70021, f"No matching federated identity record found "
                                                      f"for presented assertion. Assertion Issuer: "
                                                      f"'{claims.get('iss')}'. Assertion Subject: "
                                                      f"'{claims.get('sub')}'. Assertion Audience: "
                                                      f"'{','.join(map(str, audiences))}'.")
    return _time_refusal(claims, now)


def _certificate_refusal(header: dict[str, Any], claims: dict[str, Any], signed: bytes, signature: bytes,
                         *, client_id: str, token_endpoint: str, app: AppCredentials,
                         now: float) -> Refusal | None:
    try:
        wanted = _unb64url(str(header.get("x5t#S256") or header.get("x5t")))
    except ValueError:
        wanted = b""
    shown = wanted.hex().upper()
    cert = next((c for c in app.certificates if wanted in _thumbprints(c)), None)
    where = (f"Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured "
             f"keys for app Id '{client_id}'.")
    if cert is None:
        return Refusal(401, "invalid_client", 700027, f"Client assertion contains an invalid signature. "
                                                      f"[Reason - The key was not found., Thumbprint of key "
                                                      f"used by client: '{shown}', {where}]")
    if not _signature_ok(cert.public_key(), str(header.get("alg")), signed, signature):
        return Refusal(401, "invalid_client", 700027, f"Client assertion contains an invalid signature. "
                                                      f"[Reason - The provided signature value did not "
                                                      f"match the expected signature value., Thumbprint "
                                                      f"of key used by client: '{shown}', {where}]")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        return Refusal(401, "invalid_client", 700021, "Client assertion application identifier doesn't "
                                                      "match 'client_id' parameter.")
    if claims.get("aud") != token_endpoint:
        return Refusal(401, "invalid_client", 50027,
                       f"Invalid JWT token. The audience '{claims.get('aud')}' is not the token "
                       f"endpoint.")
    return _time_refusal(claims, now)
