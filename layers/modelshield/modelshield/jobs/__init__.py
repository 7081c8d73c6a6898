"""Bulk jobs over existing model repositories: scan, encrypt in place, re-key, verify.

`models` (Job, JobItem, statuses, outcomes), `store` (the jobs table), `discover` (listing or S3 Inventory
→ filtered, sniffed manifest), `worker` (every state-machine step, answered through task tokens),
`inplace` (encrypt in place and verify), `settle` (status, counts, error report), `service` (start,
cancel, retry: what the API and the CLI call). The engine is `statemachine/jobs.asl.json`.
"""
