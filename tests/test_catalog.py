"""The catalog file: what it grants, and every way it can be broken (each named by line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconcile.catalog.file import CatalogError, load_catalog
from tests.support.purchases import CATALOG
from tests.support.server import free_port


def test_the_fixture_catalog_grants_entitlements_and_credits() -> None:
    """Products name their entitlements and credits; an unnamed product grants nothing."""
    catalog = load_catalog(CATALOG)
    assert catalog.grants("com.example.phone.pro.monthly") == ("pro", "calling")
    assert catalog.credits("com.example.phone.credits.500") == 500
    assert catalog.grants("com.example.phone.credits.500") == ()
    assert catalog.grants("com.example.other") == ()
    assert not catalog.knows("com.example.other")
    assert catalog.credit_products == {"com.example.phone.credits.500", "credits_100",
                                      "com.example.phone.credits100"}
    assert catalog.entitlements["pro"] == "Second number, unlimited texting"


BROKEN = [
    ("[[products]]\nid = \"a\"\nentitlements = [\"pro\"\n", 3, "not valid TOML"),
    ("[entitlements.pro]\n\n[[products]]\nid = \"a\"\nentitlements = [\"gold\"]\n", 3,
     "grants 'gold', which no [entitlements.gold] table defines"),
    ("[entitlements.pro]\n[[products]]\nid = \"a\"\n[[products]]\nid = \"a\"\n", 4,
     "product 'a' is listed twice"),
    ("[[products]]\nid = \"a\"\ncredits = 0\n", 1, "credits must be a positive integer"),
    ("[[products]]\nid = \"a\"\ncredits = \"500\"\n", 1, "credits must be a positive integer"),
    ("[[products]]\nid = \"a\"\ncredit = 5\n", 1, "unknown key 'credit'"),
    ("[[products]]\nentitlements = []\n", 1, "needs an id"),
    ("[entitlements.pro]\ndescripton = \"x\"\n", 1, "unknown key 'descripton'"),
    ("[entitlement.pro]\n", 1, "unknown section 'entitlement'"),
    ("products = 3\n", 1, "products must be [[products]] tables"),
]


@pytest.mark.parametrize(("text", "line", "problem"), BROKEN)
def test_a_broken_catalog_names_the_file_the_line_and_the_fault(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    """Every fault is reported with the file, the line it stands on and what is wrong."""
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    with pytest.raises(CatalogError) as raised:
        load_catalog(path)
    message = str(raised.value)
    assert message.startswith(f"catalog {path}, line {line}: ")
    assert problem in message


def test_a_missing_catalog_file_is_an_error(tmp_path: Path) -> None:
    """A catalog path that does not exist is reported, not taken as an empty catalog."""
    with pytest.raises(CatalogError, match="cannot be read"):
        load_catalog(tmp_path / "nope.toml")


def test_serve_refuses_to_start_on_a_broken_catalog(tmp_path: Path) -> None:
    """`reconcile serve` exits 2 with the catalog's fault on one line, before listening."""
    path = tmp_path / "catalog.toml"
    path.write_text("[[products]]\nid = \"a\"\nentitlements = [\"gold\"]\n")
    env = {"PATH": "/usr/bin:/bin", "RECONCILE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
           "RECONCILE_CATALOG_FILE": str(path)}
    port = str(free_port())
    done = subprocess.run([sys.executable, "-m", "reconcile", "serve", "--port", port],
                          env=env, cwd=tmp_path, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    stderr = done.stderr.decode()
    assert f"catalog {path}, line 1: product 'a' grants 'gold'" in stderr
    assert "Traceback" not in stderr
