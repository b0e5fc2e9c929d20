"""The app's own Django tests, run by ``manage.py test shop`` with TIMEWHEEL immediate: tasks
run inline, inside the test's transaction, so no worker and no sleeps are needed."""

from django.test import TestCase

from timewheel.contrib.django import hu

from .models import Customer


class SignupTest(TestCase):
    def test_signup_welcomes_the_customer(self):
        self.assertTrue(hu.immediate)
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/signup/", {"email": "t@example.com"})
        self.assertEqual(response.status_code, 202)
        customer = Customer.objects.get(email="t@example.com")
        self.assertIsNotNone(customer.welcomed_at)
        self.assertEqual(hu.get(f"welcome:{customer.pk}").status, "succeeded")
