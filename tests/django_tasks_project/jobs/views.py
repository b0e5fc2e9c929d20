import datetime
import json
import time

from django.db import transaction
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from timewheel.contrib.django.backend import FRAMEWORK, TaskResultDoesNotExist

from . import tasks
from .models import Order


def _task(name, body):
    t = getattr(tasks, name)
    changes = {k: body[k] for k in ("priority", "queue_name") if k in body}
    if "run_after_in" in body:
        changes["run_after"] = timezone.now() + datetime.timedelta(seconds=body["run_after_in"])
    return t.using(**changes) if changes else t


def _shown(result):
    out = {"id": result.id, "status": str(result.status), "args": result.args, "attempts": result.attempts,
           "errors": [{"exception_class_path": e.exception_class_path, "traceback": e.traceback}
                      for e in result.errors],
           "queue_name": result.task.queue_name, "priority": result.task.priority}
    for key in ("enqueued_at", "started_at", "finished_at"):
        value = getattr(result, key)
        out[key] = None if value is None else value.timestamp()
    try:
        out["return_value"] = result.return_value
    except ValueError as exc:
        out["return_value_error"] = str(exc)
    return out


@csrf_exempt
def enqueue(request, name):
    body = json.loads(request.body or b"{}")
    result = _task(name, body).enqueue(*body.get("args", []), **body.get("kwargs", {}))
    return JsonResponse(_shown(result), status=202)


@csrf_exempt
async def aenqueue(request, name):
    body = json.loads(request.body or b"{}")
    result = await _task(name, body).aenqueue(*body.get("args", []))
    return JsonResponse({"id": result.id}, status=202)


def result(request, task_id):
    try:
        return JsonResponse(_shown(tasks.record.get_backend().get_result(task_id)))
    except TaskResultDoesNotExist as exc:
        return JsonResponse({"error": str(exc)}, status=404)


async def aresult(request, task_id):
    try:
        return JsonResponse(_shown(await tasks.double.aget_result(task_id)))
    except TaskResultDoesNotExist as exc:
        return JsonResponse({"error": str(exc)}, status=404)


@csrf_exempt
def order(request):
    """Makes an order and enqueues read_order for it in one transaction, held open for
    ``hold`` seconds after the enqueue; ``rollback=1`` rolls it back instead of committing."""
    body = json.loads(request.body or b"{}")
    seen = {}
    try:
        with transaction.atomic():
            made = Order.objects.create(note=body["note"])
            result = tasks.read_order.enqueue(made.pk)
            try:
                tasks.read_order.get_result(result.id)
                seen["inside"] = "found"
            except TaskResultDoesNotExist:
                seen["inside"] = "absent"
            time.sleep(body.get("hold", 0))
            seen["committing_at"] = time.time()
            if body.get("rollback"):
                raise LookupError("rolled back")
    except LookupError:
        pass
    return JsonResponse({"id": result.id, "order": made.pk, **seen}, status=202)


def framework(request):
    return JsonResponse({"framework": FRAMEWORK})
