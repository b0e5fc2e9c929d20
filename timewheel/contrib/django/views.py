"""Views to mount in a project's URLconf.

    from timewheel.contrib.django.views import metrics
    urlpatterns = [..., path("metrics", metrics)]

``metrics`` answers every request: serve it where only Prometheus reaches it, or wrap it
(``staff_member_required(metrics)``, a token check of your own).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from . import get_wheel

__all__ = ["metrics"]


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The project wheel's Prometheus metrics (``pip install 'timewheel[metrics]'``)."""
    from ...metrics import exposition
    body, content_type = exposition(get_wheel(), accept=request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)
