from django.urls import path
from newsletter import views

from timewheel.contrib.django.views import metrics

urlpatterns = [
    path("subscribe", views.subscribe),
    path("tasks/<str:task_id>", views.task_status),
    path("metrics", metrics),            # Prometheus; keep it away from the public internet
]
