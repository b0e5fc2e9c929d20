"""Django's own @task functions: nothing of timewheel here but the settings' backend."""

import asyncio
import os

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

from .models import Order, Run


class Refused(Exception):
    """A failure of the application's own kind."""


@task()
def record(label):
    Run.objects.create(label=label, pid=os.getpid())
    return {"label": label, "pid": os.getpid()}


@task(takes_context=True)
def flaky(context, label):
    """Fails its first attempt (OPTIONS retries=1 runs it again)."""
    Run.objects.create(label=label, pid=os.getpid())
    if context.attempt == 1:
        raise Refused("the first attempt always fails")
    return {"id": context.task_result.id, "attempt": context.attempt}


@task()
def refuse(message):
    raise Refused(message)


@task()
def read_order(order_id):
    """Fails (Order.DoesNotExist) if it runs before the transaction that made the order commits."""
    return Order.objects.get(pk=order_id).note


@task(queue_name="reports", priority=5)
async def double(x):
    await asyncio.sleep(0)
    return {"double": 2 * x, "pid": os.getpid()}
