"""Every write of the events app, one module per job (see each module's docstring)."""
