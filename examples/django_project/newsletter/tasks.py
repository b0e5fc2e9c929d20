"""Tasks of the newsletter app.  The timewheel app imports every installed app's tasks.py at
start-up, so the web processes and ``manage.py timewheel_run`` register the same tasks."""

import logging

from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from timewheel import current_task
from timewheel.contrib.django import hu

from .models import Subscriber

log = logging.getLogger("newsletter")


@hu.task(name="newsletter.send_confirmation", retries=3, retry_delay=2.0)
def send_confirmation(subscriber_id: int) -> str:
    ctx = current_task()
    with transaction.atomic():
        sub = Subscriber.objects.select_for_update().get(pk=subscriber_id)
        if sub.confirmation_sent_at is not None:
            # A re-run (its process died after sending): send nothing twice.
            return f"already sent to {sub.email}"
        send_mail("Please confirm your subscription", f"Hello {sub.email}, click here ...",
                  "news@example.com", [sub.email])
        sub.confirmation_sent_at = timezone.now()
        sub.save(update_fields=["confirmation_sent_at"])
    return f"sent to {sub.email} (attempt {ctx.attempt})"


@hu.on("failed")
def report_failure(rec, exc):
    # Runs once, in the process that recorded the failure, after it is stored.
    log.error("task %s (%s) failed for good: %s", rec.id, rec.name, rec.error)
