"""Built-in recipes; each module holds one Recipe class and its YAML preset sits beside it."""
