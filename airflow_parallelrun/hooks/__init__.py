"""Hooks: what talks to Airflow Connections, shared by the operators, the sensor and the trigger."""
