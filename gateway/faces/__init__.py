"""The faces of the decision core: the ways a request reaches it (see ARCHITECTURE.md)."""
