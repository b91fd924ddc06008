"""Model-card templates (package data): `modeling_place.publishing` renders them with `importlib.resources`."""
