"""Integrations with frameworks that need more than ``TimeWheel`` itself: Django, Flask, FastAPI."""
