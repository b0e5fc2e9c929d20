"""``gunicorn -w 4 mysite.wsgi`` (with or without --preload): each worker starts its wheel
at its first request (run_in_web), after the fork."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
