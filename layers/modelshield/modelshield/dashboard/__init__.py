"""The compliance dashboard: counters kept from the tables' streams, metrics.json, the page.

- `counters`: what each artifact/scan/audit change adds to the aggregates (pure); `chain`: the audit
  chain checked link by link as it grows; `aggregate`: MetricsFunction's stream folding.
- `metrics`: the metrics.json document; `attempts`: the attempts log and quarantine list (indexes, paged).
- `service`: one read-only object behind every route; `render` + `routes` + `static/`: the page.
"""
