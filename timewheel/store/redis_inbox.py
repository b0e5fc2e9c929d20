"""The Redis store's inbox (timewheel/inbox.py): the list ``{ns}:inbox`` another tool pushes
entries onto (``RPUSH``), and ``{ns}:inbox:rejected``, where entries set aside go.

The ticking process reads the oldest entries (``LRANGE``), sorts them in Python, and takes
them in by scripts that first check the list's head is still what it read (its SHA-1): the
tasks of the longest run of good entries are added by PUT in the script that trims them off
the list (all or nothing, before PUT's first write), and a bad entry at the head is moved to
the rejected list with its reason (INBOX_REJECT).  So an entry is taken in once, by one
process, or not at all; a push meanwhile lands behind what was read and waits its turn.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Sequence

from .. import inbox
from ..records import TaskRecord
from .rules import log

__all__ = ["RedisInbox"]


def _sha(entries: Sequence[bytes]) -> str:
    return hashlib.sha1(b"\0".join(entries)).hexdigest()


class RedisInbox:
    """The inbox methods of the Redis store (a mixin of
    :class:`~timewheel.store.redis.RedisStore`, which provides what is declared here)."""

    keys: Any
    readonly: bool
    location: str
    _io: Any
    _hashes: Any
    _put: Any
    _item: Any
    _script: Any
    inbox_kept = True

    def take_inbox(self, build: Callable[[inbox.Entry], TaskRecord],
                   limit: int = inbox.PAGE) -> tuple[int, int]:
        if self.readonly:
            return 0, 0
        added = aside = 0
        while added + aside < limit:
            raw = self._io(lambda c, n=limit - added - aside: c.lrange(self.keys.prefix + "inbox", 0,
                                                                        n - 1))
            if not raw:
                break
            tasks, bad = inbox.sort(enumerate(raw), build,
                                    lambda ids: [i for i, h in zip(ids, self._hashes(ids)) if h])
            first_bad = min((k for k, _ in bad), default=len(raw))
            if first_bad:                              # entries [0, first_bad) are all tasks
                recs = [rec for k, rec in tasks if k < first_bad]
                res = self._put(f"inbox:{first_bad}:{_sha(raw[:first_bad])}",
                                [self._item(r, None) for r in recs])
                if res[0] != 1:
                    if res[1] == 0:                    # another process took them meanwhile
                        break
                    continue                           # an id was taken meanwhile: sort again
                added += first_bad
                continue
            why = dict(bad)[0]
            if not self._script("inbox_reject", [_sha(raw[:1]), why]):
                break
            log.error("inbox entry of %s set aside: %s (it is in %sinbox:rejected)", self.location, why,
                      self.keys.prefix)
            aside += 1
        return added, aside      # (PUT rang the runners for a task it made ready)

    def inbox_sizes(self) -> "tuple[int, int] | None":
        def sizes(c: Any) -> list:
            pipe = c.pipeline(transaction=False)
            pipe.llen(self.keys.prefix + "inbox")
            pipe.llen(self.keys.prefix + "inbox:rejected")
            return pipe.execute()
        waiting, aside = self._io(sizes)
        return int(waiting), int(aside)

    def inbox_rejected(self, limit: int = 100) -> list[tuple[str, str]]:
        out = []
        for raw in self._io(lambda c: c.lrange(self.keys.prefix + "inbox:rejected", 0, limit - 1)):
            try:
                doc = json.loads(raw)
                out.append((str(doc["entry"]), str(doc["error"])))
            except (ValueError, KeyError, TypeError):
                out.append((raw.decode("utf-8", "replace"), "(unreadable)"))
        return out
