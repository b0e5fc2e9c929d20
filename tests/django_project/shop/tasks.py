"""Found by the timewheel app's autodiscovery: nothing imports this module explicitly in
the ``timewheel_run`` process, yet it must run these tasks there."""

import os
import time

from django.utils import timezone

from timewheel.contrib.django import hu

from .models import Customer


@hu.task(name="shop.send_welcome", retries=2, retry_delay=0.2)
def send_welcome(customer_id: int) -> dict:
    customer = Customer.objects.get(pk=customer_id)       # the ORM, in a worker thread
    customer.welcomed_at = timezone.now()
    customer.welcomed_by = os.getpid()
    customer.save()
    return {"email": customer.email, "pid": os.getpid()}


@hu.task(name="shop.slow")
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds:g}s in {os.getpid()}"
