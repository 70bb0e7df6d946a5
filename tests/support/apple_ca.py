"""A test certificate authority shaped like Apple's, and a signer for App Store JWS payloads.

The chain mirrors Apple's: EC P-256 root, intermediate with the WWDR marker OID, leaf with the
App Store receipt-signing marker OID, Subject/Authority Key Identifiers on every certificate
(OpenSSL's X509 strict mode requires them). The service verifies with the test root's DER as its
trust root: the production path with a different anchor.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LEAF_MARKER = x509.ObjectIdentifier("1.2.840.113635.100.6.11.1")
INTERMEDIATE_MARKER = x509.ObjectIdentifier("1.2.840.113635.100.6.2.1")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    marker: x509.ObjectIdentifier | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    ocsp_url: str | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if key is not issuer_key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if ocsp_url is not None:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess([x509.AccessDescription(
                x509.oid.AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier(ocsp_url),
            )]),
            critical=False,
        )
    if marker is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(marker, b"\x05\x00"), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class AppleTestCA:
    """Root, intermediate and leaf; `sign` makes a JWS the App Store would make."""

    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(
        cls,
        name: str = "Test Apple",
        *,
        valid_from: dt.datetime | None = None,
        ocsp_url: str | None = None,
    ) -> AppleTestCA:
        start = valid_from or dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        end = start + dt.timedelta(days=365 * 30)
        root_key = ec.generate_private_key(ec.SECP256R1())
        inter_key = ec.generate_private_key(ec.SECP256R1())
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        root_name, inter_name = f"{name} Root CA", f"{name} WWDR"
        root = _cert(root_name, root_key, root_name, root_key, ca=True, marker=None,
                     not_before=start, not_after=end)
        inter = _cert(inter_name, inter_key, root_name, root_key, ca=True,
                      marker=INTERMEDIATE_MARKER, not_before=start, not_after=end,
                      ocsp_url=ocsp_url)
        leaf = _cert(f"{name} Signing", leaf_key, inter_name, inter_key, ca=False,
                     marker=LEAF_MARKER, not_before=start, not_after=end, ocsp_url=ocsp_url)
        return cls(root=root, intermediate=inter, leaf=leaf, leaf_key=leaf_key)

    def save(self, folder: Path) -> None:
        """Write the chain and leaf key to `folder`; root.der is the trust root to configure."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, cert in (("root", self.root), ("intermediate", self.intermediate),
                           ("leaf", self.leaf)):
            (folder / f"{name}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
        (folder / "leaf-key.pem").write_bytes(self.leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    @classmethod
    def load(cls, folder: Path) -> AppleTestCA:
        certs = [x509.load_der_x509_certificate((folder / f"{n}.der").read_bytes())
                 for n in ("root", "intermediate", "leaf")]
        key = serialization.load_pem_private_key((folder / "leaf-key.pem").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(root=certs[0], intermediate=certs[1], leaf=certs[2], leaf_key=key)

    @property
    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    @property
    def x5c(self) -> list[str]:
        return [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
            for c in (self.leaf, self.intermediate, self.root)
        ]

    def sign(self, payload: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        """A compact ES256 JWS over `payload` with this chain in `x5c`."""
        return jwt.encode(
            payload, self.leaf_key, algorithm="ES256",
            headers={"x5c": self.x5c, **(headers or {})},
        )
