"""Deployment helpers and schedules (prefect.yaml holds the deployments themselves)."""
