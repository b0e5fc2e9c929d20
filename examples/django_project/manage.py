#!/usr/bin/env python
"""A newsletter sign-up that e-mails a confirmation a few seconds later, through timewheel.

    cd examples/django_project
    python manage.py migrate
    python manage.py runserver                   # runs the tasks too (run_in_web)
    curl -d email=ada@example.com http://127.0.0.1:8000/subscribe
    curl http://127.0.0.1:8000/tasks/confirm:1   # pending ... succeeded; the mail is in sent-mail/

In production, run the tasks in their own process instead (TIMEWHEEL_RUN_IN_WEB=0 for the
web processes): ``python manage.py timewheel_run --metrics-port 9108``.
"""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
