"""Every write use case of the closure app, one keyword-only function each."""
