"""Thin Prefect tasks over the domain code in batchgate/."""
