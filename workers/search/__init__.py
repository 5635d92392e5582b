"""The default plan's search: recipes tried under a time budget, the fastest passing one kept (pure: no Django).

``space`` lists the recipes, ``budget`` is the clock, ``records`` says what happened to each candidate,
``splits`` divides the validation rows into a selection and a held-out part, ``sensitivity`` ranks the
nodes int8 hurts most, and ``loop`` drives them all.
"""
