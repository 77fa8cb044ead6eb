"""RQ job entry points: thin functions that load, call the sync core, apply and record (enqueued by name)."""
