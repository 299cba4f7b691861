"""features: raw splits turned into model features through a recipe, cached on disk (cache.py) or streamed.

Above the Recipe contract (they call its hooks), below training and preflight (which use them); see docs/design.md.
"""
