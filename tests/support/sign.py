"""Sign an Apple fixture with a local test CA, for trying the running service by hand.

    python -m tests.support.sign --ca-dir /tmp/testca                 # create the CA; prints root
    python -m tests.support.sign --ca-dir /tmp/testca fixtures/apple/did_renew.json

The second form prints `{"signedPayload": ...}` for the fixture's notification, ready to POST.
Configure the service with RECONCILE_APPLE_ROOT_CERTS=/tmp/testca/root.der to accept it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification


def shift(value: Any, delta: int) -> None:
    """Move every millisecond date (`...Date` keys) in `value` by `delta`, in place."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("Date") and isinstance(item, int):
                value[key] = item + delta
            else:
                shift(item, delta)
    elif isinstance(value, list):
        for item in value:
            shift(item, delta)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Sign Apple fixtures with a test CA.")
    parser.add_argument("--ca-dir", type=Path, required=True)
    parser.add_argument("fixture", type=Path, nargs="?")
    parser.add_argument("--now", action="store_true",
                        help="move every date so that the notification is signed now")
    args = parser.parse_args(argv)
    if (args.ca_dir / "root.der").exists():
        ca = AppleTestCA.load(args.ca_dir)
    else:
        ca = AppleTestCA.create("Local Test")
        ca.save(args.ca_dir)
    if args.fixture is None:
        print(args.ca_dir / "root.der")
        return
    notification = json.loads(args.fixture.read_text())["notification"]
    if args.now:
        shift(notification, int(time.time() * 1000) - notification["signedDate"])
    print(json.dumps({"signedPayload": sign_notification(ca, notification)}))


if __name__ == "__main__":
    main()
