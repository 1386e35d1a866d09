"""Streaming infrastructure: topic names, Kafka principals and ACL provisioning (see ``security``)."""
