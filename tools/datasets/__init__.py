"""Public datasets as ``EvalData`` (read in place, never copied into the repository)."""
