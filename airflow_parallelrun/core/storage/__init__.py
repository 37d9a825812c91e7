"""Storage: locations (fsspec), retries of transient errors, the run manifest and layout, claims."""
