"""gunicorn settings of the test suite (``gunicorn -c tests/gunicorn_conf.py``): each worker
dies with its master.  The master dies with the test run (timewheel.testing.processes); its
workers would only notice their parent is gone at their next check, up to half of
``--timeout`` later."""

from timewheel.testing.processes import die_with_parent


def post_fork(server, worker):
    die_with_parent()
