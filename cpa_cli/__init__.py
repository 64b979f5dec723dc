"""The `cpa` command line: set-up, headless runs and the serving questions."""
