"""Data and models for the example DAGs: scikit-learn bundled datasets only, nothing is downloaded."""
