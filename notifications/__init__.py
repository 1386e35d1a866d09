"""Letters: render a notice per space, queue it in the outbox with its decision, deliver it at least once.

* ``render``      one jinja2 environment per space (learning, good_practice, formal), deterministic Message-IDs
* ``recipients``  the validated directory: (ODS code, role) and national roles → contact
* ``outbox``      the transactional outbox on ``services.db.Database`` (SQLite or PostgreSQL)
* ``delivery``    transports (SMTP, webhook, .eml) and the relay that sends what is due
* ``samples``     a valid notice for every template, for previews, the benchmark and tests
"""
