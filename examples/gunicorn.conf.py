"""gunicorn settings that start a Flask app's TimeWheel (``timewheel.contrib.flask``) in every
worker as soon as it boots, rather than at the first request it serves:

    gunicorn -c examples/gunicorn.conf.py -w 4 examples.flask_app:app      # --preload too

``post_worker_init`` runs in each worker after the fork and after the worker has loaded the
app (``worker.wsgi``): never in the master, with or without ``--preload``.  Every worker then
claims due tasks from the start, and stands by to tick the store should the one ticking it
die.  Keep ``graceful_timeout`` above the app's ``TIMEWHEEL_EXIT_GRACE`` (default 5 s): at a
graceful stop each worker waits that long for its running tasks.
"""

graceful_timeout = 30


def post_worker_init(worker):
    # (a store that cannot be opened now is logged, and the worker's requests try again)
    worker.wsgi.extensions["timewheel"].start()
