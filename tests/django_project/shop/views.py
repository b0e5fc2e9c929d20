import json

from django.db import transaction
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from timewheel import TaskNotFound
from timewheel.contrib.django import hu

from .models import Customer
from .tasks import send_welcome, slow


@csrf_exempt
@require_POST
def signup(request):
    with transaction.atomic():
        customer = Customer.objects.create(email=request.POST["email"])
        task_id = f"welcome:{customer.pk}"
        # After the commit, so the worker finds the row; the id makes a retried request harmless.
        transaction.on_commit(lambda: send_welcome.delay(customer.pk, count_down=0.3, task_id=task_id))
    return JsonResponse({"customer": customer.pk, "task_id": task_id}, status=202)


@csrf_exempt
@require_POST
def slow_view(request):
    return JsonResponse({"task_id": slow.delay(float(request.POST["seconds"])).id}, status=202)


@require_GET
def task_status(request, task_id):
    try:
        rec = hu.get(task_id).record
    except TaskNotFound:
        raise Http404(task_id) from None
    body = {"task_id": task_id, "status": rec.status, "error": rec.error}
    if rec.status == "succeeded":
        body["result"] = hu.get(task_id).result(timeout=0)
    return JsonResponse(body)


@require_GET
def customer(request, pk):
    c = Customer.objects.filter(pk=pk).values().first()
    if c is None:
        raise Http404(pk)
    return JsonResponse(json.loads(json.dumps(c, default=str)))
