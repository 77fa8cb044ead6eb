"""What goes out to PTI and back: durable intent and the relay, the reconcile of one customer, the per-site guard,
the drift sweep, and every write back to Storeganise."""
