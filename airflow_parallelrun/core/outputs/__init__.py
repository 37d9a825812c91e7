"""The output side: statuses, failure thresholds, parts and their merge, the report."""
