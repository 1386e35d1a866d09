"""Delivery channels (``smtp``, ``webhook``, ``eml``) behind one ``Transport`` shape, and the outbox ``relay``."""
