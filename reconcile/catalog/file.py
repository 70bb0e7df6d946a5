"""Reading and validating the catalog file (`RECONCILE_CATALOG_FILE`, TOML).

Everything is checked when the service starts: a typo in a product id's key or an entitlement
that no `[entitlements.*]` table defines would otherwise grant nothing, silently, in production.
Errors name the file and the line, so an operator can fix the file without reading code.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENTITLEMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
PRODUCT_KEYS = {"id", "entitlements", "credits", "description"}
ENTITLEMENT_KEYS = {"description"}


class CatalogError(ValueError):
    """The catalog file cannot be used; the message names the file, the line and the fault."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"catalog {where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Product:
    id: str
    entitlements: tuple[str, ...] = ()
    credits: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class Catalog:
    """What the business sells. An empty catalog grants nothing (the default)."""

    entitlements: Mapping[str, str | None] = field(default_factory=dict)
    products: Mapping[str, Product] = field(default_factory=dict)

    def grants(self, product_id: str | None) -> tuple[str, ...]:
        """The entitlements `product_id` grants; none for a product the catalog does not name."""
        product = self.products.get(product_id or "")
        return product.entitlements if product else ()

    def credits(self, product_id: str | None) -> int | None:
        """Credits each purchase of `product_id` grants, or None when it is no credit pack."""
        product = self.products.get(product_id or "")
        return product.credits if product else None

    def knows(self, product_id: str | None) -> bool:
        return (product_id or "") in self.products

    @property
    def credit_products(self) -> frozenset[str]:
        return frozenset(p.id for p in self.products.values() if p.credits)


def load_catalog(path: Path) -> Catalog:
    """The catalog in `path`, or `CatalogError` saying exactly what is wrong and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CatalogError(path, None, f"cannot be read: {error}") from error
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line = _decode_error_line(str(error), text)
        raise CatalogError(path, line, f"not valid TOML: {error}") from error
    return _parse(raw, _Lines(path, text))


class _Lines:
    """Where things stand in the file: tomllib keeps no positions, so we look them up."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def of(self, pattern: str, occurrence: int = 0) -> int | None:
        found = [n for n, line in enumerate(self.lines, 1) if re.match(pattern, line.strip())]
        return found[occurrence] if occurrence < len(found) else None

    def product(self, index: int) -> int | None:
        return self.of(r"^\[\[\s*products\s*\]\]", index)

    def entitlement(self, name: str) -> int | None:
        return self.of(rf"^\[\s*entitlements\s*\.\s*\"?{re.escape(name)}\"?\s*\]")

    def error(self, line: int | None, problem: str) -> CatalogError:
        return CatalogError(self.path, line, problem)


def _parse(raw: Mapping[str, Any], lines: _Lines) -> Catalog:
    unknown = sorted(set(raw) - {"entitlements", "products"})
    if unknown:
        name = unknown[0]
        raise lines.error(lines.of(rf"^\[*\s*{re.escape(name)}\b"),
                          f"unknown section {name!r} (expected [entitlements.NAME] and "
                          "[[products]])")
    entitlements = _entitlements(raw.get("entitlements", {}), lines)
    products: dict[str, Product] = {}
    listed = raw.get("products", [])
    if not isinstance(listed, list):
        raise lines.error(lines.of(r"^products\b"), "products must be [[products]] tables")
    for index, item in enumerate(listed):
        product = _product(item, index, entitlements, lines)
        if product.id in products:
            raise lines.error(lines.product(index), f"product {product.id!r} is listed twice")
        products[product.id] = product
    return Catalog(entitlements=entitlements, products=products)


def _entitlements(raw: object, lines: _Lines) -> dict[str, str | None]:
    if not isinstance(raw, dict):
        raise lines.error(lines.of(r"^entitlements\b"),
                          "entitlements must be tables: [entitlements.NAME]")
    out: dict[str, str | None] = {}
    for name, body in raw.items():
        line = lines.entitlement(name)
        if not ENTITLEMENT_NAME.match(name):
            raise lines.error(line, f"entitlement name {name!r} must be 1-64 letters, digits "
                              "or . _ : - (starting with a letter or digit)")
        if not isinstance(body, dict):
            raise lines.error(line, f"entitlement {name!r} must be a table")
        extra = sorted(set(body) - ENTITLEMENT_KEYS)
        if extra:
            raise lines.error(line, f"entitlement {name!r} has unknown key {extra[0]!r} "
                              "(only 'description')")
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise lines.error(line, f"entitlement {name!r}: description must be a string")
        out[name] = description
    return out


def _product(
    item: object, index: int, entitlements: Mapping[str, str | None], lines: _Lines
) -> Product:
    line = lines.product(index)
    if not isinstance(item, dict):
        raise lines.error(line, "each product must be a [[products]] table")
    extra = sorted(set(item) - PRODUCT_KEYS)
    if extra:
        raise lines.error(line, f"product #{index + 1} has unknown key {extra[0]!r} "
                          f"(expected {', '.join(sorted(PRODUCT_KEYS))})")
    product_id = item.get("id")
    if not isinstance(product_id, str) or not product_id.strip() or len(product_id) > 256:
        raise lines.error(line, f"product #{index + 1} needs an id: a non-empty string")
    granted = item.get("entitlements", [])
    if not isinstance(granted, list) or not all(isinstance(g, str) for g in granted):
        raise lines.error(line, f"product {product_id!r}: entitlements must be a list of names")
    for name in granted:
        if name not in entitlements:
            raise lines.error(line, f"product {product_id!r} grants {name!r}, which no "
                              f"[entitlements.{name}] table defines")
    credits = item.get("credits")
    if credits is not None and (
        isinstance(credits, bool) or not isinstance(credits, int) or credits <= 0
    ):
        raise lines.error(line, f"product {product_id!r}: credits must be a positive integer")
    description = item.get("description")
    if description is not None and not isinstance(description, str):
        raise lines.error(line, f"product {product_id!r}: description must be a string")
    return Product(id=product_id, entitlements=tuple(dict.fromkeys(granted)), credits=credits,
                   description=description)


def _decode_error_line(message: str, text: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    if match:
        return int(match.group(1))
    return len(text.splitlines()) or None if "end of document" in message else None
