"""The clinician review workbench: the queue of flagged lines, dispositions, reports and
the feedback loop to retraining and thresholds."""
