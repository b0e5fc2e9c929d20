"""A process that takes a store's inbox in, racing others (tests/test_inbox.py): waits for the
go file, calls take_inbox ``calls`` times (0: until the inbox is empty), pages of 17, and prints
its totals as JSON."""

from __future__ import annotations

import json
import os
import sys
import time

from timewheel.records import new_task
from timewheel.store import open_store


def main(location: str, go: str, calls: int) -> None:
    store = open_store(location, serializer="json")

    def build(e):
        now = store.now()
        return new_task(e.id, e.name, now + 3600, e.payload, now, 0, 1.0, None, None)

    while not os.path.exists(go):
        time.sleep(0.005)
    added = aside = 0
    n = 0
    while n < calls or not calls:
        a, b = store.take_inbox(build, limit=17)
        added, aside, n = added + a, aside + b, n + 1
        if not calls and not a + b:
            break
    store.close()
    print(json.dumps([added, aside]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
