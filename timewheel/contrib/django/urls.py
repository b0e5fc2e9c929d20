"""``path("timewheel/", include("timewheel.contrib.django.urls"))``: the web view, for staff
(see :mod:`timewheel.contrib.django.web`; ``pip install 'timewheel[web]'``)."""

from django.urls import re_path

from .web import web_view

app_name = "timewheel"
urlpatterns = [re_path(r"^(?P<path>.*)$", web_view, name="web")]
