"""Deprecated path: moved to ``airflow_provider_qmatic.api.contract`` (see ``_moved.py``)."""

from airflow_provider_qmatic._moved import moved

moved(__name__, "airflow_provider_qmatic.api.contract")
