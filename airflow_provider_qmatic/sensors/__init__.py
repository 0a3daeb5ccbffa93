"""Sensors: tasks that wait until something is true at Qmatic."""
