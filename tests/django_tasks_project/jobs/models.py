from django.db import models


class Order(models.Model):
    note = models.CharField(max_length=100)


class Run(models.Model):
    """One row per run of a task: which, in which process (the id orders the runs)."""

    label = models.CharField(max_length=100)
    pid = models.IntegerField()
