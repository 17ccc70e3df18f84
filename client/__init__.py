"""Client library and CLI for the `recommender` ensemble over gRPC and HTTP."""

from client.recommender_client import (
    Recommendation,
    RecommendationRequest,
    RecommenderClient,
    RecommenderClientError,
)

__all__ = [
    "Recommendation",
    "RecommendationRequest",
    "RecommenderClient",
    "RecommenderClientError",
]
