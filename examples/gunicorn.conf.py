"""gunicorn settings for the examples: timewheel's log in gunicorn's error log.

    gunicorn -c examples/gunicorn.conf.py -w 4 examples.flask_app:app

timewheel logs to the ``timewheel`` logger (task failures, retries, store trouble), which has
only a ``NullHandler``: a library prints nothing unless the application says where.  gunicorn
configures its own loggers, not the root one, so under gunicorn nothing about a failing task
reaches the log.  This hook, run in each worker after the fork, hands the ``timewheel`` logger
gunicorn's error log handlers (the file or stream of ``--error-logfile``).
"""

import logging


def post_fork(server, worker):
    timewheel_log = logging.getLogger("timewheel")
    for handler in logging.getLogger("gunicorn.error").handlers:
        timewheel_log.addHandler(handler)
    timewheel_log.setLevel(logging.INFO)
    # To have every worker run tasks from the start (not at its first request), start the
    # wheel here too:  from myapp import hu; hu.start()
