"""harmspot.services: the command line, the store and the FastAPI service."""
