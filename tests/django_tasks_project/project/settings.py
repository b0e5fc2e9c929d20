"""Settings of the django.tasks test project, on Django >= 6.0 (django.tasks) or on older
Django with the django-tasks backport.  The test sets through the environment: DJANGO_DB (the
app's SQLite database), TIMEWHEEL_DB (the store) and ENQUEUE_ON_COMMIT ("0" turns it off)."""

import os
from pathlib import Path

try:
    import django.tasks  # noqa: F401 - Django >= 6.0 has the framework itself
    TASK_APPS = []
except ImportError:
    TASK_APPS = ["django_tasks"]      # the backport

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", *TASK_APPS, "timewheel.contrib.django", "jobs"]
ROOT_URLCONF = "project.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_DB"],
                         "OPTIONS": {"timeout": 20}}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TIMEWHEEL = {"path": os.environ["TIMEWHEEL_DB"], "workers": 1, "tick": 0.2}
TASKS = {"default": {
    "BACKEND": "timewheel.contrib.django.TasksBackend",
    "QUEUES": ["default", "reports"],
    "ENQUEUE_ON_COMMIT": os.environ.get("ENQUEUE_ON_COMMIT", "1") == "1",
    "OPTIONS": {"retries": 1, "retry_delay": 0.2},
}}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"timewheel": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}
