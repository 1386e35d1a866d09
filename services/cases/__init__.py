"""Alarm cases: the HQIP outlier process an adverse alarm follows (docs/outlier-process.md §3).

* ``calendar``: working days per country from the ``holidays`` package;
* ``machine``: the pure state machine (open, apply an action, fire a passed deadline);
* ``store``: cases and their append-only transitions in the service database (SQLite or PostgreSQL);
* ``replay``: a case rebuilt from its transitions in the formal trail, the authority the stored row is checked against;
* ``service``: the machine over the store, with an injectable clock and an ``on_outcome`` hook so the caller
  writes trail and outbox rows in the same transaction;
* ``cli``: the ``signalbox cases`` sub-app.

Two choices worth knowing: a case keeps the deadlines of the rule set it opened under (pinned in the case), and
a missed deadline reminds once per stage; only acknowledgement and non-response move the case on by themselves.
"""
