"""Triggers: watch storage from Airflow's triggerer."""
