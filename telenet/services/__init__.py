"""Use cases: one unit of work each, with permission checks, audit and events."""
