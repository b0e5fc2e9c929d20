from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from shop import views

from timewheel.contrib.django.views import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("signup/", views.signup),
    path("slow/", views.slow_view),
    path("tasks/<str:task_id>/", views.task_status),
    path("customers/<int:pk>/", views.customer),
    path("metrics", metrics),
    path("ops/timewheel/", include("timewheel.contrib.django.urls")),
    path("favicon.ico", lambda request: HttpResponse(status=204)),    # the admin login page's
]
