"""The bundled recipes, installed as the resource package ``zonkey.recipes``.

``zonkey recipes`` lists them and ``zonkey show NAME`` prints one resolved; the code reads them
through ``importlib.resources`` (:func:`zonkey.core.recipe.bundled_recipes_dir`).
"""
