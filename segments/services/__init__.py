"""Every write of the segments app, one module per job (see each module's docstring)."""
