"""Training engines: each turns a validated spec and prepared data into a portable artifact."""
