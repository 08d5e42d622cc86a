"""tminus: a launch tier decision becomes the work that follows, as Prefect flows."""
