"""Sensors: wait for new input files."""
