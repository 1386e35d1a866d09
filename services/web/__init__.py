"""``signalbox serve``: the web console and JSON API for audit teams, trusts and regulators (``app.create_app``)."""
