"""gunicorn settings for a Flask app with a TimeWheel (``timewheel.contrib.flask``): the wheel
starts in every worker as soon as it boots, and timewheel's log goes to gunicorn's error log.

    gunicorn -c examples/gunicorn.conf.py -w 4 examples.flask_app:app      # --preload too

``post_worker_init`` runs in each worker after the fork and after the worker has loaded the
app (``worker.wsgi``): never in the master, with or without ``--preload``.  Every worker then
claims due tasks from the start, and stands by to tick the store should the one ticking it
die.  Keep ``graceful_timeout`` above the app's ``TIMEWHEEL_EXIT_GRACE`` (default 5 s): at a
graceful stop each worker waits that long for its running tasks.

timewheel logs to the ``timewheel`` logger (task failures, retries, store trouble), which has
only a ``NullHandler``: a library prints nothing unless the application says where.  gunicorn
configures its own loggers, not the root one, so under gunicorn nothing about a failing task
would reach the log.  ``post_fork`` hands the ``timewheel`` logger gunicorn's error-log
handlers (the file or stream of ``--error-logfile``) in each worker.
"""

import logging

graceful_timeout = 30


def post_fork(server, worker):
    timewheel_log = logging.getLogger("timewheel")
    for handler in logging.getLogger("gunicorn.error").handlers:
        timewheel_log.addHandler(handler)
    timewheel_log.setLevel(logging.INFO)


def post_worker_init(worker):
    # (a store that cannot be opened now is logged, and the worker's requests try again)
    worker.wsgi.extensions["timewheel"].start()
