"""Every read of the segments app, one module per job, each scoped to a shop."""
