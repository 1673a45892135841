"""The claim-history rules (3 to 7): frequency caps, unbundling, provider outliers,
pre-existing exclusions and the sub-limit ledger. Pure functions over snapshots that the
adjudicator loads from the state store; no I/O, no clock inside a rule."""
