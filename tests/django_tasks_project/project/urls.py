from django.urls import path
from jobs import views

urlpatterns = [
    path("enqueue/<str:name>/", views.enqueue),
    path("aenqueue/<str:name>/", views.aenqueue),
    path("result/<str:task_id>/", views.result),
    path("aresult/<str:task_id>/", views.aresult),
    path("order/", views.order),
    path("framework/", views.framework),
]
