from django.db import models


class Subscriber(models.Model):
    email = models.EmailField(unique=True)
    confirmation_sent_at = models.DateTimeField(null=True)
