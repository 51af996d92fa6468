"""The model card template (model_card.md, Jinja) and an example card rendered from it. Shipped in
the wheel as the `vanilla_transformer.model_cards` package data (pyproject.toml)."""
