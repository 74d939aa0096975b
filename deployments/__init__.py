"""What `make serve` sets up beside the deployments of prefect.yaml: the notification automations
(`automations.py`). prefect.yaml holds the deployments and their schedules themselves."""
