"""The store: two LMDB environments in one directory.

environments (opening, transactions, the writer lock), catalog (sources, positions,
feeds), index (the last-call entry layout and its native merge kernel), lookup (the
index's read path), liveness (live feeds and watermarks), archive (Parquet calls).
The public façade over it and the evidence is cdrtrace.api.Store.
"""
