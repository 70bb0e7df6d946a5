"""Legacy App Store receipts for tests: the PKCS#7 / ASN.1 layout `ReceiptUtility` reads.

Only the structure matters (the service reads nothing but the transaction id, then asks the
App Store Server API): a SignedData whose content is the receipt's attribute SET, with the
in-app purchase SET (type 17) holding a transaction identifier (type 1703).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import asn1

PKCS7_SIGNED_DATA = "1.2.840.113549.1.7.2"
PKCS7_DATA = "1.2.840.113549.1.7.1"
BUNDLE_ID, IN_APP, QUANTITY, TRANSACTION_ID = 2, 17, 1701, 1703


def _der(build: Callable[[asn1.Encoder], None]) -> bytes:
    encoder = asn1.Encoder()
    encoder.start()
    build(encoder)
    out: bytes = encoder.output()
    return out


def _attribute(encoder: asn1.Encoder, kind: int, value: bytes) -> None:
    encoder.enter(asn1.Numbers.Sequence)
    encoder.write(kind, asn1.Numbers.Integer)
    encoder.write(1, asn1.Numbers.Integer)
    encoder.write(value, asn1.Numbers.OctetString)
    encoder.leave()


def _utf8(text: str) -> bytes:
    return _der(lambda e: e.write(text, asn1.Numbers.UTF8String))


def app_receipt(transaction_ids: list[str], bundle_id: str = "com.example.phone") -> str:
    """A base64 app receipt listing in-app purchases with these transaction ids."""

    def in_app(transaction_id: str) -> bytes:
        def build(encoder: asn1.Encoder) -> None:
            encoder.enter(asn1.Numbers.Set)
            _attribute(encoder, QUANTITY, _der(lambda e: e.write(1, asn1.Numbers.Integer)))
            _attribute(encoder, TRANSACTION_ID, _utf8(transaction_id))
            encoder.leave()
        return _der(build)

    def payload(encoder: asn1.Encoder) -> None:
        encoder.enter(asn1.Numbers.Set)
        _attribute(encoder, BUNDLE_ID, _utf8(bundle_id))
        for transaction_id in transaction_ids:
            _attribute(encoder, IN_APP, in_app(transaction_id))
        encoder.leave()

    content = _der(payload)

    def receipt(encoder: asn1.Encoder) -> None:
        encoder.enter(asn1.Numbers.Sequence)
        encoder.write(PKCS7_SIGNED_DATA, asn1.Numbers.ObjectIdentifier)
        encoder.enter(0, asn1.Classes.Context)
        encoder.enter(asn1.Numbers.Sequence)
        encoder.write(1, asn1.Numbers.Integer)
        encoder.enter(asn1.Numbers.Set)
        encoder.leave()
        encoder.enter(asn1.Numbers.Sequence)
        encoder.write(PKCS7_DATA, asn1.Numbers.ObjectIdentifier)
        encoder.enter(0, asn1.Classes.Context)
        encoder.write(content, asn1.Numbers.OctetString)
        encoder.leave()
        encoder.leave()
        encoder.leave()
        encoder.leave()
        encoder.leave()

    return base64.b64encode(_der(receipt)).decode()
