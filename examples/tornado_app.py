"""A Tornado app whose handler schedules an image resize; another handler reports on a task
and can wait for it (``?wait=seconds``) without blocking the IOLoop.

    python examples/tornado_app.py [port]          # default port 8888

    curl -X POST -d url=https://example.com/cat.png http://127.0.0.1:8888/resize
    curl 'http://127.0.0.1:8888/tasks/<task_id>?wait=10'

Environment: ``TIMEWHEEL_DB`` (the store, default ``tasks.db``) and ``RESIZE_DELAY`` (seconds
before the resize runs, default 1).

The TimeWheel is started lazily by the first request a process serves, so the module also
works with ``tornado.process.fork_processes`` (start after the fork, in each child).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.web import Application, HTTPError, RequestHandler

from timewheel import TaskFailed, TaskNotFound, TimeWheel

RESIZE_DELAY = float(os.environ.get("RESIZE_DELAY", "1"))

hu = TimeWheel(os.environ.get("TIMEWHEEL_DB", "tasks.db"), workers=4)


@hu.task(name="media.resize", retries=2, retry_delay=1.0)
async def resize(url: str, width: int) -> dict[str, Any]:
    await asyncio.sleep(0.05)            # a real app would fetch and resize the image here
    return {"url": url, "width": width, "resized": f"{url}?w={width}"}


class Handler(RequestHandler):
    def prepare(self) -> None:
        if not hu.running:               # idempotent; cheap once started
            hu.start()


class ResizeHandler(Handler):
    async def post(self) -> None:
        url = self.get_argument("url")
        width = int(self.get_argument("width", "256"))
        # delay() commits to the file, which may wait for another process: not on the loop.
        handle = await asyncio.to_thread(resize.options(count_down=RESIZE_DELAY).delay, url, width)
        self.set_status(202)
        self.write({"task_id": handle.id})


class TaskHandler(Handler):
    async def get(self, task_id: str) -> None:
        try:
            handle = hu.get(task_id)
        except TaskNotFound:
            raise HTTPError(404, "no such task (or its result expired)") from None
        out: dict[str, Any] = {"task_id": task_id}
        wait = float(self.get_argument("wait", "0"))
        try:
            out["result"] = await handle.aresult(timeout=wait)
        except TimeoutError:
            pass                         # not finished yet: report the status only
        except TaskFailed as exc:
            out["error"] = exc.error
        out["status"] = handle.status
        self.write(out)


def make_app() -> Application:
    return Application([(r"/resize", ResizeHandler), (r"/tasks/([0-9a-zA-Z_-]+)", TaskHandler)])


async def main(port: int) -> None:
    server = HTTPServer(make_app())
    server.listen(port, "127.0.0.1")
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()     # until Ctrl-C
    finally:
        server.stop()
        await asyncio.to_thread(hu.stop)


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8888))
    except KeyboardInterrupt:
        pass
