"""The Kafka driver: topic names (``topics``), principals and ACLs (``acl``), the worker, its outputs and clients."""
