from django.db import models


class Customer(models.Model):
    email = models.EmailField(unique=True)
    welcomed_at = models.DateTimeField(null=True)
    welcomed_by = models.IntegerField(null=True)      # pid of the process that ran the task
