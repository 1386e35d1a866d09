"""People who use signalbox's web console and API: their identities, roles, bindings and credentials."""
