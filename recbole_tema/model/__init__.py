"""Plugin models: each module ``<name>.py`` defines the recommender class ``<Name>``.

The registry discovers them, so adding a model is adding its module and its
``properties/model/<Name>.yaml``.
"""
