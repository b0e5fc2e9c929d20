from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from timewheel import TaskNotFound
from timewheel.contrib.django import hu

from .models import Subscriber
from .tasks import send_confirmation


@csrf_exempt                 # an API endpoint for curl; a form would keep Django's CSRF check
@require_POST
def subscribe(request):
    email = request.POST.get("email", "").strip()
    if "@" not in email:
        return JsonResponse({"error": "email: an address like ada@example.com"}, status=400)
    try:
        with transaction.atomic():
            sub = Subscriber.objects.create(email=email)
    except IntegrityError:
        sub = Subscriber.objects.get(email=email)
    task_id = f"confirm:{sub.pk}"
    # After the commit, so the task finds the row.  The id makes a repeated sign-up harmless:
    # while that task is pending or running, delay() adds nothing.
    transaction.on_commit(lambda: send_confirmation.delay(sub.pk, task_id=task_id,
                                                          count_down=settings.CONFIRM_DELAY))
    return JsonResponse({"subscriber": sub.pk, "task_id": task_id}, status=202)


@require_GET
def task_status(request, task_id):
    try:
        handle = hu.get(task_id)
    except TaskNotFound:
        raise Http404(task_id) from None
    rec = handle.record
    body = {"task_id": task_id, "status": rec.status, "attempts": rec.attempts, "error": rec.error}
    if rec.status == "succeeded":
        body["result"] = handle.result(timeout=0)
    return JsonResponse(body)
