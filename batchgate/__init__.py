"""batchgate: validate, sample, approve and run large batch operations safely.

This package is plain Python (no Prefect import): models, rules, reports, the ledger's queries, CLI.
"""

__version__ = "0.1.0"
