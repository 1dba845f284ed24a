"""Exceptions that the CLI turns into one-line messages (exit code 2) instead of tracebacks."""


class UserError(ValueError):
    """A mistake in what the user asked for: the message names the bad value and what is accepted."""


class BudgetExceeded(RuntimeError):
    """A search tried to spend more NFEs than its budget. Budgets are hard limits: never truncated."""
