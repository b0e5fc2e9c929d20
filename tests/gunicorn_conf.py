"""gunicorn settings of the test suite (``gunicorn -c tests/gunicorn_conf.py``): each worker
dies with its master.  The master dies with the test run (tests/procs.py); its workers would
only notice their parent is gone at their next check, up to half of ``--timeout`` later."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import die_with_parent  # noqa: E402


def post_fork(server, worker):
    die_with_parent()
