"""Every read of the analytics app, one module per job; import from the module that defines a name.

Reads go to `analytics_db()` (the replica when configured). Dashboard numbers come from the rollup
tables; the only raw-log reads are funnels, the abandoned-cart recovery list and the live stream,
each bounded by the requested period (with an index on the time column) or by a row limit.
"""
