"""Contracts shared by the job, the service and the store: pydantic models only, no logic."""
