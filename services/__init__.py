"""BentoML services: three encoder services and the Recommender entry service."""
