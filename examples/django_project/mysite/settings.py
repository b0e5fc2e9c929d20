"""Settings of the example.  DJANGO_DB, TIMEWHEEL_DB, MAIL_DIR, CONFIRM_DELAY and
TIMEWHEEL_RUN_IN_WEB (1 by default) override the defaults, as the smoke test does."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-replace-me"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "timewheel.contrib.django",          # settings, tasks.py discovery, manage.py timewheel_run
    "newsletter",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "mysite.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("DJANGO_DB", str(BASE_DIR / "db.sqlite3"))}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = os.environ.get("MAIL_DIR", str(BASE_DIR / "sent-mail"))
CONFIRM_DELAY = float(os.environ.get("CONFIRM_DELAY", "5"))     # seconds after sign-up

# Any TimeWheel option, plus run_in_web: start the wheel in each web process at its first
# request (after the fork of gunicorn or uWSGI).  Without it, `manage.py timewheel_run` runs
# the tasks; both together work too (every process shares the one store).
TIMEWHEEL = {
    "path": os.environ.get("TIMEWHEEL_DB", str(BASE_DIR / "tasks.db")),
    "workers": 2,
    "timeout": 60,                       # no task holds a worker longer than a minute
    "run_in_web": os.environ.get("TIMEWHEEL_RUN_IN_WEB", "1") == "1",
}
LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"timewheel": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                "newsletter": {"handlers": ["stderr"], "level": "INFO"}},
}
