"""Every write of the analytics app: filling and rebuilding the rollup tables, one module per table.

`rollups` drives the others (watermarks, which days to recompute); import from the module that
defines a name.
"""
