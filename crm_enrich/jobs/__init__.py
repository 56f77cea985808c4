"""Jobs: the state machine a record's job moves through (state), and the
store that keeps it in Redis (store)."""
