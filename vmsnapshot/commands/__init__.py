"""One module per CLI command; each exposes one function returning an exit
status."""
