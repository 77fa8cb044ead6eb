"""What comes in from Storeganise: records landed in the mirror, webhook deliveries and what each event means, and
the import and incremental pull."""
